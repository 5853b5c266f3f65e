import { connect, nextEvent, register } from "./http.ts";

/** A client on one backend sends; a client on the other receives it live (through Redis). */
export async function crossBackend(onBackend1: string, onBackend2: string): Promise<void> {
  const tag = crypto.randomUUID().slice(0, 8);
  const sender = await register(onBackend1, `cross1_${tag}`);
  const receiver = await register(onBackend2, `cross2_${tag}`);
  const a = await connect(onBackend1, sender.token, "websocket");
  const b = await connect(onBackend2, receiver.token, "polling");
  try {
    const arrives = nextEvent(b, "message", (m: any) => m.content === `across ${tag}`);
    const ack: any = await a.timeout(10_000).emitWithAck("message", { content: `across ${tag}` });
    if (!ack?.ok) throw new Error(`send on backend1: ${JSON.stringify(ack)}`);
    const got = await arrives;
    if (got.id !== ack.message.id || got.seq !== ack.message.seq) throw new Error(`received ${JSON.stringify(got)}, acked ${JSON.stringify(ack.message)}`);
  } finally {
    a.close();
    b.close();
  }
}
