package train

import "context"

// TaskInfo describes the task a trainer call belongs to.
type TaskInfo struct {
	// Worker is the persistent worker key, e.g. "site-1/job-id/fedavg": an
	// exec trainer in persistent mode runs the calls with one key in one
	// process, one at a time; "" is a default worker.
	Worker string
	// Started, if set, is called with the PID of the process that runs the
	// call (the worker's in persistent mode, the task's own in per-task
	// mode) once the call is handed to it, so that its energy can be
	// attributed. It is called at most once per call, from the calling
	// goroutine.
	Started func(pid int)
}

type taskInfoKey struct{}

// WithTask returns a copy of ctx carrying t.
func WithTask(ctx context.Context, t TaskInfo) context.Context {
	return context.WithValue(ctx, taskInfoKey{}, t)
}

// TaskFrom returns the TaskInfo ctx carries, or the zero TaskInfo.
func TaskFrom(ctx context.Context) TaskInfo {
	t, _ := ctx.Value(taskInfoKey{}).(TaskInfo)
	return t
}

// started calls t.Started with pid if it is set.
func (t TaskInfo) started(pid int) {
	if t.Started != nil {
		t.Started(pid)
	}
}
