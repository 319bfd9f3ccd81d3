// Package hclogslog adapts hashicorp/go-hclog, the logger interface that
// hashicorp/raft logs through, to log/slog, so that raft's logs land in the
// same handler as the rest of Cohort's. The adapter's level defaults to
// [hclog.Info] — raft's own default, DEBUG, writes a line per heartbeat
// failure and per pipeline event — and the slog handler's own level still
// applies on top of it. server/ha takes the adapter as an injected
// hclog.Logger (server may not import internal); cmd/cohort builds it with
// [New].
package hclogslog
