// Package client is Cohort's site agent: it joins a coordinator, keeps one
// Session stream open (reconnecting with backoff and jitter when it breaks,
// trying each configured coordinator in turn), runs the tasks it is sent
// with a trainer from train on data from data, meters each
// task's energy, and moves weights in and out in checksummed chunks. The
// agent only ever dials out.
package client
