-- Optional per-token request budget (requests per minute); NULL = unlimited.
ALTER TABLE api_tokens ADD COLUMN rate_limit_per_min integer CHECK (rate_limit_per_min > 0);
