// Package client is Cohort's site agent: it finds the leading coordinator
// through the leader dialer (client/leader: every configured coordinator
// asked at once, backoff with jitter while none leads), keeps one Session
// stream open, runs the tasks it is sent with a trainer from train on
// data from data, meters each task's energy, and moves weights in and out
// in checksummed chunks; a transfer model's update is made chunk by chunk
// as the model arrives, so the site never holds either. Stopped (SIGTERM), it drains: no new task, the
// tasks in flight finish and upload. The agent only ever dials out.
package client
