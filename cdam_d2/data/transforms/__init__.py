"""Data-side transforms of both methods (plain numpy / PIL / torch; no modeling imports)."""
