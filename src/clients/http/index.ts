export { HttpClient, UpstreamError, httpOptionsFrom, retryAfterMs } from "./http-client.js";
export type { HttpClientOptions, HttpRequest, HttpResponse } from "./http-client.js";
