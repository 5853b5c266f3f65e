/**
 * The load generators run as their own processes (see bench/run.ts): they read their
 * settings from the JSON file named on the command line and print one `RESULT <json>`
 * line on stdout. Progress goes to stderr.
 */
export async function readSettings<T>(): Promise<T> {
  const file = process.argv[2];
  if (!file) throw new Error("usage: bun bench/load/<scenario>.ts <settings.json>");
  return (await Bun.file(file).json()) as T;
}

export function report(kind: "RESULT" | "READY", value: unknown): void {
  process.stdout.write(`${kind} ${JSON.stringify(value)}\n`);
}

export function progress(message: string): void {
  process.stderr.write(`  · ${message}\n`);
}

/** Messages/s or requests/s, rounded for tables. */
export const perSecond = (count: number, ms: number) => Math.round((count / ms) * 1000);
