// The token lives in sessionStorage (this tab only) and travels only in Authorization headers.
const KEY = "camreg.token";

export const session = {
  get token() {
    return sessionStorage.getItem(KEY);
  },
  set(token) {
    sessionStorage.setItem(KEY, token);
  },
  clear() {
    sessionStorage.removeItem(KEY);
  },
};

export class ApiError extends Error {
  constructor(status, problem, fallback) {
    super((problem && (problem.detail || problem.title)) || fallback);
    this.status = status;
    this.problem = problem;
  }
}

export async function request(path, { method = "GET", body, headers = {}, signal, raw } = {}) {
  const h = { ...headers };
  if (session.token) h.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) h["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers: h,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    cache: "no-store",
  });
  if (raw) {
    if (!res.ok) throw new ApiError(res.status, null, res.statusText);
    return res;
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) throw new ApiError(res.status, data, res.statusText);
  return { data, res };
}

export async function get(path, opts) {
  return (await request(path, opts)).data;
}

// Which optional APIs this server has (geodata, coverage land on other branches): asked once
// from the public OpenAPI document, so the page never probes for them with failing requests.
let paths = null;
export async function hasPath(path) {
  if (paths === null) {
    try {
      paths = new Set(Object.keys((await get("/api/v1/openapi.json")).paths || {}));
    } catch {
      paths = new Set();
    }
  }
  return paths.has(path);
}
