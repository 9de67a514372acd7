export { Wavecast } from "./client";
export { Subscription } from "./subscription";
export { WavecastError, UnauthorizedError, TIMEOUT, DISCONNECTED, QUEUE_FULL } from "./errors";
export { backoff, shouldReconnect } from "./backoff";
export type * from "./types";
