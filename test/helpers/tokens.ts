/** The current time in whole seconds, as JWT `iat`/`exp` claims count it. */
export const now = () => Math.floor(Date.now() / 1000);

/** `value` as JSON, base64url-encoded: one segment of a hand-made JWT. */
export const b64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
