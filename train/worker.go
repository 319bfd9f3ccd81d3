package train

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Exec modes ([Config.ExecMode]).
const (
	// ExecPerTask runs the command once per task (the default).
	ExecPerTask = "per-task"
	// ExecPersistent runs the command once per worker key and hands it
	// task after task over two pipes.
	ExecPersistent = "persistent"

	// ExecPersistentProtocol is the "version" of persistent mode's task
	// lines and the protocol its hello line names.
	ExecPersistentProtocol = 2
	// DefaultExecIdleTimeout is how long a persistent worker waits for its
	// next task before it is stopped.
	DefaultExecIdleTimeout = 10 * time.Minute

	execMaxReply   = 1 << 20 // a line on the reply pipe must be shorter
	execQuoteBytes = 200     // of a bad reply line quoted in the error
)

// ErrTrainerProtocol is returned by the exec trainer in persistent mode
// when its process breaks the protocol: no hello, a line that is not a
// reply, a reply to another task.
var ErrTrainerProtocol = errors.New("trainer protocol error")

// execWorker is the persistent worker of one key: its calls take turns
// (sem), and each finds the process running or starts one.
type execWorker struct {
	key string
	sem chan struct{} // holds a token while a call uses the worker
	gen uint64        // counts calls, for the idle timer; guarded by sem
	// Guarded by Exec.wmu:
	proc    *execProcess
	idle    *time.Timer
	removed bool // StopWorker or Close took it out of Exec.workers
}

// execProcess is one run of a worker's command.
type execProcess struct {
	cmd     *exec.Cmd
	pid     int
	tasks   *os.File      // write end of the task pipe (fd 3 there)
	replies *os.File      // read end of the reply pipe (fd 4 there)
	lines   chan execLine // from the reply pipe; closed after an error or EOF
	exited  chan struct{} // closed once the process is reaped
	waitErr error         // set before exited is closed
	start   time.Time     // when it started
	hello   bool          // it sent its hello line; guarded by the worker's sem
	stopped atomic.Int32  // running, termSent or killSent
	closing sync.Once     // closes tasks
	stderr  *lockedTail   // its stderr's last lines

	pmu      sync.Mutex   // held while progress is called
	progress progressFunc // of the task it runs; guarded by pmu
}

type progressFunc func(epoch, batch, batches int, loss float64)

// execLine is a line from the reply pipe, or the error that ended it.
type execLine struct {
	b   []byte
	err error
}

// States of execProcess.stopped.
const (
	procRunning = iota
	procTermSent
	procKillSent
)

// lockedTail is a tailLines shared between the output goroutine and calls.
type lockedTail struct {
	mu sync.Mutex
	t  tailLines
}

func (l *lockedTail) add(s string) {
	l.mu.Lock()
	l.t.add(s)
	l.mu.Unlock()
}

func (l *lockedTail) reset() {
	l.mu.Lock()
	l.t = tailLines{max: execTailLines}
	l.mu.Unlock()
}

func (l *lockedTail) suffix() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.t.suffix()
}

// worker returns the worker of key, making it.
func (e *Exec) worker(key string) *execWorker {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	w, ok := e.workers[key]
	if !ok {
		w = &execWorker{key: key, sem: make(chan struct{}, 1)}
		if e.workers == nil {
			e.workers = make(map[string]*execWorker)
		}
		e.workers[key] = w
	}
	if w.idle != nil {
		w.idle.Stop()
		w.idle = nil
	}
	return w
}

// whatWorker names the command, the task kind and the worker in errors.
func (e *Exec) whatWorker(kind, key string) string {
	if key == "" {
		key = "default"
	}
	return fmt.Sprintf("%s on worker %q", e.what(kind), key)
}

// serve hands task t to the worker of ctx's key, waits for its reply and
// has read check the outputs (what and tail for its error), all while it
// holds the worker. The worker's process is replaced after any error but
// a reply ok=false.
func (e *Exec) serve(ctx context.Context, t execTask, progress progressFunc, read func(what, tail string) error) (execProc, error) {
	info := TaskFrom(ctx)
	what := e.whatWorker(t.Kind, info.Worker)
	var w *execWorker
	for w == nil {
		w = e.worker(info.Worker)
		select {
		case w.sem <- struct{}{}:
		case <-ctx.Done():
			return execProc{}, fmt.Errorf("%s: waiting for the worker's previous task: %w", what, ctx.Err())
		}
		e.wmu.Lock()
		removed := w.removed
		e.wmu.Unlock()
		if removed { // StopWorker or Close took it meanwhile
			<-w.sem
			w = nil
		}
	}
	defer e.release(w)

	e.wmu.Lock()
	p := w.proc
	e.wmu.Unlock()
	if p != nil {
		select {
		case <-p.exited: // died while idle
			p = nil
		default:
		}
	}
	if p == nil {
		var err error
		if p, err = e.startWorker(t.Kind, info.Worker); err != nil {
			return execProc{}, err
		}
		e.wmu.Lock()
		removed := w.removed
		if !removed {
			w.proc = p
		}
		e.wmu.Unlock()
		if removed { // StopWorker ran meanwhile
			e.stopProcess(p, true)
			return execProc{}, fmt.Errorf("%w: %s: the worker was stopped as the task started", ErrTrainerFailed, what)
		}
	}
	res, tail, err, keep := e.exchange(ctx, p, t, what, info, progress)
	if err == nil {
		if err = read(what, tail); err != nil {
			keep = false // what else did it get wrong?
		}
	}
	if !keep {
		e.wmu.Lock()
		if w.proc == p {
			w.proc = nil
		}
		e.wmu.Unlock()
		e.stopProcess(p, true)
	}
	return res, err
}

// release ends a call on w and arms its idle timer.
func (e *Exec) release(w *execWorker) {
	w.gen++
	gen := w.gen
	<-w.sem
	idle := e.IdleTimeout
	if idle <= 0 {
		idle = DefaultExecIdleTimeout
	}
	e.wmu.Lock()
	defer e.wmu.Unlock()
	if w.removed || w.proc == nil {
		return
	}
	if w.idle != nil {
		w.idle.Stop()
	}
	w.idle = time.AfterFunc(idle, func() {
		select {
		case w.sem <- struct{}{}:
		default:
			return // a call took it meanwhile
		}
		e.wmu.Lock()
		var p *execProcess
		if w.gen == gen && !w.removed {
			p, w.proc = w.proc, nil
			e.detachLocked(w) // a call waiting for it moves to a new worker
		}
		e.wmu.Unlock()
		if p != nil {
			e.log.Debug("trainer_worker_idle", "worker", w.key, "pid", p.pid, "idle", idle)
			e.stopProcess(p, false)
		}
		<-w.sem
	})
}

// exchange sends one task and waits for its reply. keep reports whether
// the process may serve the next task.
func (e *Exec) exchange(ctx context.Context, p *execProcess, t execTask, what string, info TaskInfo, progress progressFunc) (res execProc, tail string, err error, keep bool) {
	if !p.hello {
		if err := e.awaitHello(ctx, p, what); err != nil {
			return execProc{}, p.stderr.suffix(), err, false
		}
		p.hello = true
	}
	p.stderr.reset()
	if progress != nil {
		p.setProgress(progress)
		defer p.setProgress(nil)
	}
	id := strconv.FormatUint(e.taskID.Add(1), 10)
	line, err := json.Marshal(struct {
		ID string `json:"id"`
		execTask
	}{id, t})
	if err != nil {
		return execProc{}, "", fmt.Errorf("exec trainer: encoding the task: %w", err), true
	}
	start := time.Now()
	cpu0, cpuOK := procCPUSeconds(p.pid)
	// A process that reads no tasks cannot block the call past its
	// deadline (none: the zero time).
	d, _ := ctx.Deadline()
	_ = p.tasks.SetWriteDeadline(d)
	if _, err := p.tasks.Write(append(line, '\n')); err != nil {
		// It exited or closed its task pipe: its exit says more.
		if exitedWithin(p, e.grace()) {
			return e.crashed(p, what, start)
		}
		return execProc{}, "", fmt.Errorf("%w: %s: sending the task: %v%s", ErrTrainerFailed, what, err, p.stderr.suffix()), false
	}
	info.started(p.pid)
	done := func() execProc {
		r := execProc{seconds: time.Since(start).Seconds()}
		if cpu1, ok := procCPUSeconds(p.pid); ok && cpuOK {
			r.cpuSeconds = cpu1 - cpu0
		}
		return r
	}
	for {
		select {
		case l, ok := <-p.lines:
			if !ok || l.err != nil {
				if !ok || errors.Is(l.err, io.EOF) {
					// It closed the reply pipe, most likely by exiting.
					if exitedWithin(p, e.grace()) {
						return e.crashed(p, what, start)
					}
					return execProc{}, "", fmt.Errorf("%w: %s closed its reply pipe (fd 4) without exiting%s", ErrTrainerProtocol, what, p.stderr.suffix()), false
				}
				return execProc{}, "", fmt.Errorf("%w: %s: reading its replies: %v%s", ErrTrainerProtocol, what, l.err, p.stderr.suffix()), false
			}
			var r struct {
				ID       *string `json:"id"`
				OK       *bool   `json:"ok"`
				Error    string  `json:"error"`
				Progress *struct {
					Epoch, Batch, Batches int
					Loss                  float64
				} `json:"progress"`
			}
			err := json.Unmarshal(l.b, &r)
			if err == nil && r.ID != nil && *r.ID == id && r.OK == nil && r.Progress != nil {
				// Progress on the reply pipe: it cannot overtake the reply.
				if progress != nil {
					p.pmu.Lock() // never beside a stdout progress line's call
					progress(r.Progress.Epoch, r.Progress.Batch, r.Progress.Batches, r.Progress.Loss)
					p.pmu.Unlock()
				}
				continue
			}
			if err != nil || r.ID == nil || r.OK == nil {
				return execProc{}, "", fmt.Errorf(`%w: %s wrote %s on its reply pipe (fd 4), not a reply {"id": %q, "ok": true}%s`,
					ErrTrainerProtocol, what, quoteLine(l.b), id, p.stderr.suffix()), false
			}
			if *r.ID != id {
				return execProc{}, "", fmt.Errorf("%w: %s answered task id %q, which it was not given (its task is %q)%s",
					ErrTrainerProtocol, what, *r.ID, id, p.stderr.suffix()), false
			}
			tail := p.stderr.suffix()
			if !*r.OK {
				msg := r.Error
				if msg == "" {
					msg = "no reason given"
				}
				if len(msg) > execMaxLine {
					msg = msg[:execMaxLine] + "…"
				}
				return done(), tail, fmt.Errorf("%w: %s reported an error: %s%s", ErrTrainerFailed, what, msg, tail), true
			}
			return done(), tail, nil, true
		case <-p.exited:
			return e.crashed(p, what, start)
		case <-ctx.Done():
			return e.timedOut(ctx, p, what, start)
		}
	}
}

// awaitHello waits for the hello line of a process that just started.
func (e *Exec) awaitHello(ctx context.Context, p *execProcess, what string) error {
	advice := "set model.exec.mode: per-task, or loop over cohort_trainer.tasks() (python/cohort_trainer.py); docs/trainer-protocol.md describes the protocol"
	select {
	case l, ok := <-p.lines:
		if ok && l.err == nil {
			var h struct {
				Hello *struct {
					Protocol int `json:"protocol"`
				} `json:"hello"`
			}
			if err := json.Unmarshal(l.b, &h); err != nil || h.Hello == nil {
				return fmt.Errorf("%w: %s: its first line on the reply pipe (fd 4) is %s, not the hello {\"hello\": {\"protocol\": 2}}; %s%s",
					ErrTrainerProtocol, what, quoteLine(l.b), advice, p.stderr.suffix())
			}
			if h.Hello.Protocol != ExecPersistentProtocol {
				return fmt.Errorf("%w: %s speaks protocol %d; Cohort speaks %d in persistent mode", ErrTrainerProtocol, what, h.Hello.Protocol, ExecPersistentProtocol)
			}
			return nil
		}
		<-p.exited
		return fmt.Errorf("%w: %s %s after %.1fs, before its hello line (unless stderr shows another error, the script does not speak the persistent protocol: %s)%s",
			ErrTrainerProtocol, what, exitSummary(p.waitErr), time.Since(p.start).Seconds(), advice, p.stderr.suffix())
	case <-ctx.Done():
		return fmt.Errorf("%w: %s sent no hello line in the %.1fs it ran before the task's end (%v): the script does not speak the persistent protocol, or starts too slowly (%s)%s",
			ErrTrainerProtocol, what, time.Since(p.start).Seconds(), ctx.Err(), advice, p.stderr.suffix())
	}
}

// exitedWithin reports whether p exits within d.
func exitedWithin(p *execProcess, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.exited:
		return true
	case <-t.C:
		return false
	}
}

// crashed is the error of a process that exited during a task.
func (e *Exec) crashed(p *execProcess, what string, start time.Time) (execProc, string, error, bool) {
	tail := p.stderr.suffix()
	r := execProc{seconds: time.Since(start).Seconds()}
	return r, tail, fmt.Errorf("%w: %s %s during the task, %.1fs into it%s", ErrTrainerFailed, what, exitSummary(p.waitErr), r.seconds, tail), false
}

// timedOut stops p for a task whose context is done.
func (e *Exec) timedOut(ctx context.Context, p *execProcess, what string, start time.Time) (execProc, string, error, bool) {
	e.stopProcess(p, true)
	how := "sent SIGTERM"
	if p.stopped.Load() == procKillSent {
		how = fmt.Sprintf("sent SIGTERM, then SIGKILL after %v", e.grace())
	}
	why := "was cancelled"
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		why = "ran past its deadline"
	}
	tail := p.stderr.suffix()
	r := execProc{seconds: time.Since(start).Seconds()}
	return r, tail, fmt.Errorf("%s %s after %.1fs (%s; the worker is replaced for the next task)%s: %w", what, why, r.seconds, how, tail, ctx.Err()), false
}

// exitSummary says how a process ended.
func exitSummary(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			s := "was killed by signal " + ws.Signal().String()
			if ws.Signal() == syscall.SIGKILL {
				s += " (nothing in Cohort sent it: the kernel's out-of-memory killer does, for one)"
			}
			return s
		}
		return fmt.Sprintf("exited with code %d", ee.ExitCode())
	}
	if err != nil {
		return fmt.Sprintf("ended (%v)", err)
	}
	return "exited with code 0"
}

// quoteLine quotes a line for an error message, cut to execQuoteBytes.
func quoteLine(b []byte) string {
	if len(b) > execQuoteBytes {
		return strconv.Quote(string(b[:execQuoteBytes])) + "…"
	}
	return strconv.Quote(string(b))
}

func (e *Exec) grace() time.Duration {
	if e.Grace <= 0 {
		return DefaultExecGrace
	}
	return e.Grace
}

// startWorker starts the command as a persistent worker.
func (e *Exec) startWorker(kind, key string) (*execProcess, error) {
	tasksR, tasksW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("exec trainer: making the task pipe: %w", err)
	}
	repliesR, repliesW, err := os.Pipe()
	if err != nil {
		tasksR.Close()
		tasksW.Close()
		return nil, fmt.Errorf("exec trainer: making the reply pipe: %w", err)
	}
	cmd := exec.Command(e.command[0], e.command[1:]...)
	cmd.Dir = e.dir
	cmd.Env = append(e.environ(), "COHORT_MODE="+ExecPersistent, "COHORT_PROTOCOL="+strconv.Itoa(ExecPersistentProtocol),
		"COHORT_TASKS_FD=3", "COHORT_REPLIES_FD=4")
	cmd.ExtraFiles = []*os.File{tasksR, repliesW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = e.grace()
	p := &execProcess{
		cmd: cmd, tasks: tasksW, replies: repliesR,
		lines:  make(chan execLine),
		exited: make(chan struct{}),
		stderr: &lockedTail{t: tailLines{max: execTailLines}},
	}
	log := e.log.With("worker", key)
	cmd.Stdout, cmd.Stderr = e.outputWriters(log, p.stderr.add, func(epoch, batch, batches int, loss float64) {
		p.pmu.Lock()
		defer p.pmu.Unlock()
		if p.progress != nil {
			p.progress(epoch, batch, batches, loss)
		}
	})
	p.start = time.Now()
	err = cmd.Start()
	tasksR.Close()
	repliesW.Close()
	if err != nil {
		tasksW.Close()
		repliesR.Close()
		return nil, e.startError(kind, err)
	}
	p.pid = cmd.Process.Pid
	log.Debug("trainer_worker_started", "pid", p.pid, "command", e.command, "dir", e.dir)
	go p.readReplies()
	go func() {
		// As in execute: kill the rest of the group while the leader's
		// pid is held, then reap.
		waited := waitExited(p.pid)
		if waited {
			_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		}
		p.waitErr = cmd.Wait()
		if !waited {
			_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		}
		p.closing.Do(func() { p.tasks.Close() })
		log.Debug("trainer_worker_exited", "pid", p.pid, "seconds", time.Since(p.start).Seconds(), "err", p.waitErr)
		close(p.exited)
	}()
	return p, nil
}

// readReplies passes the reply pipe's lines to p.lines until it ends
// (io.EOF) or a line is over execMaxReply bytes, then that error, and
// closes p.lines; it gives up once the process has exited and nobody takes
// a line.
func (p *execProcess) readReplies() {
	defer close(p.lines)
	defer p.replies.Close()
	send := func(l execLine) bool {
		select {
		case p.lines <- l:
			return true
		case <-p.exited:
			return false
		}
	}
	r := bufio.NewReaderSize(p.replies, 64<<10)
	for {
		var line []byte
		var err error
		for {
			chunk, isPrefix, rerr := r.ReadLine()
			line = append(line, chunk...)
			if rerr != nil {
				err = rerr
				break
			}
			if len(line) > execMaxReply || isPrefix && len(line) >= execMaxReply {
				err = fmt.Errorf("a line on the reply pipe (fd 4) is %d bytes or longer: %s", execMaxReply, quoteLine(line))
				break
			}
			if !isPrefix {
				break
			}
		}
		if len(line) > 0 && err == io.EOF { // a last line without a newline
			if !send(execLine{b: line}) {
				return
			}
		}
		if err != nil {
			send(execLine{err: err})
			return
		}
		if !send(execLine{b: line}) {
			return
		}
	}
}

// setProgress routes the process's progress lines to f (nil: nowhere).
func (p *execProcess) setProgress(f progressFunc) {
	p.pmu.Lock()
	p.progress = f
	p.pmu.Unlock()
}

// stopProcess ends p and waits for it: it closes the task pipe and, when
// kill or after the grace period, sends SIGTERM to its group, then
// SIGKILL after another.
func (e *Exec) stopProcess(p *execProcess, kill bool) {
	grace := e.grace()
	p.closing.Do(func() { p.tasks.Close() })
	t := time.NewTimer(grace)
	defer t.Stop()
	if !kill {
		select {
		case <-p.exited:
			return
		case <-t.C:
		}
		t.Reset(grace)
	}
	select {
	case <-p.exited:
		return
	default:
	}
	p.stopped.Store(procTermSent)
	_ = syscall.Kill(-p.pid, syscall.SIGTERM)
	select {
	case <-p.exited:
		return
	case <-t.C:
	}
	p.stopped.Store(procKillSent)
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	<-p.exited
}

// StopWorker stops the persistent worker of key, if it runs: it closes its
// task pipe, waits [Exec.Grace] for it to exit, then kills its process
// group. A call it is running fails; the next call with key starts a new
// process.
func (e *Exec) StopWorker(key string) {
	e.wmu.Lock()
	w := e.workers[key]
	if w != nil {
		e.detachLocked(w)
	}
	e.wmu.Unlock()
	if w != nil {
		e.stopWorker(w)
	}
}

// detachLocked takes w out of e.workers. e.wmu must be held.
func (e *Exec) detachLocked(w *execWorker) {
	delete(e.workers, w.key)
	w.removed = true
	if w.idle != nil {
		w.idle.Stop()
		w.idle = nil
	}
}

// stopWorker stops w's process; a call using it fails.
func (e *Exec) stopWorker(w *execWorker) {
	e.wmu.Lock()
	p := w.proc
	w.proc = nil
	e.wmu.Unlock()
	if p != nil {
		e.stopProcess(p, false)
	}
}

// stopWorkers stops every persistent worker.
func (e *Exec) stopWorkers() {
	e.wmu.Lock()
	ws := make([]*execWorker, 0, len(e.workers))
	for _, w := range e.workers {
		ws = append(ws, w)
		e.detachLocked(w)
	}
	e.wmu.Unlock()
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() { e.stopWorker(w) })
	}
	wg.Wait()
}

// environ is the environment of the command, but for the protocol's
// variables.
func (e *Exec) environ() []string {
	env := os.Environ()
	if _, ok := os.LookupEnv("PYTHONUNBUFFERED"); !ok {
		env = append(env, "PYTHONUNBUFFERED=1") // lines reach the log as printed
	}
	return append(env, e.env...)
}

// outputWriters returns the stdout and stderr of a process: lines to the
// log, progress lines to progress, stderr lines to tail.
func (e *Exec) outputWriters(log interface {
	Debug(string, ...any)
	Info(string, ...any)
}, tail func(string), progress progressFunc) (stdout, stderr *lineWriter) {
	stdout = newLineWriter(func(line string, cut bool) {
		if rest, ok := strings.CutPrefix(line, ExecProgressPrefix+" "); ok {
			var p struct {
				Epoch, Batch, Batches int
				Loss                  float64
			}
			if err := json.Unmarshal([]byte(rest), &p); err == nil {
				if progress != nil {
					progress(p.Epoch, p.Batch, p.Batches, p.Loss)
				}
				log.Debug("trainer_progress", "epoch", p.Epoch, "batch", p.Batch, "batches", p.Batches, "loss", p.Loss)
				return
			}
		}
		log.Info("trainer_output", "stream", "stdout", "line", line, "cut", cut)
	})
	stderr = newLineWriter(func(line string, cut bool) {
		tail(line)
		log.Info("trainer_output", "stream", "stderr", "line", line, "cut", cut)
	})
	return stdout, stderr
}
