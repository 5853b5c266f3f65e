// The ceiling for the read path: the bare `Bun.serve` hello-world, measured in the same run.
const server = Bun.serve({ port: Number(process.env.PORT ?? 0), hostname: "127.0.0.1", fetch: () => new Response("Hello, world!") });
console.log(JSON.stringify({ msg: "listening", url: `http://127.0.0.1:${server.port}` }));
process.on("SIGTERM", () => process.exit(0));
