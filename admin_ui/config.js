// Where the admin API lives. Empty: the same origin that served this page (the function serves the console at /).
// A bucket deployment rewrites this one line, e.g. export const API_BASE = "https://gptload-xyz.a.run.app";
export const API_BASE = "";
