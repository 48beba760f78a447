/** The environment variables of the client verbs (not broker settings: `serve` does not warn about them). */
export const CLIENT_ENV = {
  addr: "LLM_BROKER_ADDR",
  token: "LLM_BROKER_TOKEN",
  as: "LLM_BROKER_AS",
  cert: "LLM_BROKER_CERT",
  key: "LLM_BROKER_KEY",
  ca: "LLM_BROKER_CA",
} as const;
