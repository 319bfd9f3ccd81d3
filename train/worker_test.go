package train

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cohortfl/cohort/data"
)

// execHelperPy is a NumPy trainer on python/cohort_trainer.py: train adds
// 1 to every weight and reports its pid; MODE makes it misbehave, the
// "-once" modes only while the file $MARK does not exist (they create it).
const execHelperPy = `
import os, signal, sys, time
sys.path.insert(0, os.environ["COHORT_PYTHON_PATH"])
import numpy as np
import cohort_trainer as ct

mode = os.environ.get("MODE", "ok")

def once():
    mark = os.environ["MARK"]
    if os.path.exists(mark):
        return False
    open(mark, "w").close()
    return True

for task in ct.tasks(tensors="numpy"):
    with task:
        if task.kind == "init":
            task.reply(weights={"w": np.zeros((3, 6)), "b": np.array([1.0, 2.0, 3.0])})
            continue
        w = task.weights()
        x, y = task.data()
        if task.kind == "evaluate":
            task.reply(metrics={"loss": 0.25, "accuracy": 0.75, "pid": os.getpid()})
            continue
        if mode == "crash-once" and once():
            print("dying on purpose", file=sys.stderr, flush=True)
            os._exit(3)
        if mode == "hang-once" and once():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("hanging on purpose", file=sys.stderr, flush=True)
            time.sleep(1000)
        if mode == "raise":
            raise ValueError("bad batch %d" % len(y))
        if mode == "shape":
            w["w"] = np.zeros((2, 6))
        task.progress(1, 1, 1, 0.5)
        task.reply(weights={k: v + 1 for k, v in w.items()}, metrics={"train_loss": 0.5, "pid": os.getpid(), "samples": len(y)})
`

// needNumPy skips the test unless Debian's python3 imports numpy.
func needNumPy(t testing.TB) {
	t.Helper()
	needPython(t)
	if out, err := exec.Command(execPython, "-c", "import numpy").CombinedOutput(); err != nil {
		t.Skipf("%s cannot import numpy (apt-get install python3-numpy): %v\n%s", execPython, err, out)
	}
}

// helperExec is an exec trainer running execHelperPy in mode ExecMode.
func helperExec(t testing.TB, execMode, mode string) *Exec {
	t.Helper()
	needNumPy(t)
	py, err := filepath.Abs("../python")
	if err != nil {
		t.Fatal(err)
	}
	script := writeScript(t, "helper.py", execHelperPy)
	env := map[string]string{"COHORT_PYTHON_PATH": py, "MODE": mode, "MARK": filepath.Join(t.TempDir(), "mark")}
	e := newTestExec(t, Config{Command: []string{execPython, script}, Env: env, ExecMode: execMode})
	e.Grace = 200 * time.Millisecond
	return e
}

// pidCtx returns a context for worker key whose Started records the PID.
func pidCtx(ctx context.Context, key string, pid *int) context.Context {
	return WithTask(ctx, TaskInfo{Worker: key, Started: func(p int) { *pid = p }})
}

// sequence runs init, train, train and evaluate on worker key and returns
// the PIDs Started saw.
func sequence(t *testing.T, e *Exec, key string) []int {
	t.Helper()
	ctx := context.Background()
	pids := make([]int, 4)
	w, err := e.InitContext(pidCtx(ctx, key, &pids[0]), 7)
	if err != nil {
		t.Fatalf("InitContext: %v", err)
	}
	var progress []int
	for i := 1; i <= 2; i++ {
		cfg := TrainConfig{Epochs: 1, BatchSize: 2, LR: 0.1, Progress: func(epoch, batch, batches int, loss float64) {
			progress = append(progress, epoch)
		}}
		var res TrainResult
		if w, res, err = e.Train(pidCtx(ctx, key, &pids[i]), w, execTestData(), cfg); err != nil {
			t.Fatalf("Train %d: %v", i, err)
		}
		if got := res.Metrics["pid"]; int(got) != pids[i] {
			t.Errorf("Train %d: the script ran as pid %v, Started saw %d", i, got, pids[i])
		}
		if res.Metrics["trainer_seconds"] <= 0 {
			t.Errorf("Train %d: metrics %v lack trainer_seconds", i, res.Metrics)
		}
	}
	if got, want := w.Tensors[1].Data, []float32{3, 4, 5}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("b after two trains = %v, want %v", got, want)
	}
	if len(progress) != 2 {
		t.Errorf("Progress called %d times, want 2", len(progress))
	}
	ev, err := e.Evaluate(pidCtx(ctx, key, &pids[3]), w, execTestData())
	if err != nil {
		t.Fatalf("Evaluate: %v", err)
	}
	if ev.Accuracy != 0.75 || ev.NumSamples != 5 || ev.Seconds <= 0 {
		t.Errorf("Evaluate = %+v, want accuracy 0.75 on 5 samples, seconds > 0", ev)
	}
	return pids
}

func TestExecPersistentSequence(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e := helperExec(t, ExecPersistent, "ok")
	pids := sequence(t, e, "site-1/job/fedavg")
	for i, p := range pids {
		if p == 0 || p != pids[0] {
			t.Fatalf("persistent mode: task %d ran in pid %d; want every task in one process (%v)", i, p, pids)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pids[0])

	per := helperExec(t, ExecPerTask, "ok")
	pids = sequence(t, per, "site-1/job/fedavg")
	seen := map[int]bool{}
	for _, p := range pids {
		if p == 0 || seen[p] {
			t.Fatalf("per-task mode: pids %v; want a new process per task", pids)
		}
		seen[p] = true
	}
}

func TestExecPersistentWorkers(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e := helperExec(t, ExecPersistent, "ok")
	var wg sync.WaitGroup
	pids := make([][2]int, 2)
	errs := make([]error, 2)
	for i, key := range []string{"site-1/j/a", "site-2/j/a"} {
		wg.Go(func() {
			for j := range 2 {
				_, _, err := e.Train(pidCtx(context.Background(), key, &pids[i][j]), execTestWeights(), execTestData(), TrainConfig{Epochs: 1, BatchSize: 2, LR: 0.1})
				if err != nil {
					errs[i] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if pids[0][0] != pids[0][1] || pids[1][0] != pids[1][1] || pids[0][0] == pids[1][0] {
		t.Errorf("pids by worker %v; want one process per key, two keys two processes", pids)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pids[0][0])
	waitGone(t, pids[1][0])
}

func TestExecPersistentCrash(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e := helperExec(t, ExecPersistent, "crash-once")
	var first, second int
	_, _, err := e.Train(pidCtx(context.Background(), "k", &first), execTestWeights(), execTestData(), TrainConfig{Epochs: 1, BatchSize: 2, LR: 0.1})
	if !errors.Is(err, ErrTrainerFailed) {
		t.Fatalf("Train with a crash = %v, want %v", err, ErrTrainerFailed)
	}
	for _, w := range []string{"exited with code 3", "| dying on purpose", `train task) on worker "k"`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Train error %q lacks %q", err, w)
		}
	}
	if _, _, err := e.Train(pidCtx(context.Background(), "k", &second), execTestWeights(), execTestData(), TrainConfig{Epochs: 1, BatchSize: 2, LR: 0.1}); err != nil {
		t.Fatalf("Train after the crash: %v", err)
	}
	if first == second || second == 0 {
		t.Errorf("pids %d then %d; want a new process after the crash", first, second)
	}
	waitGone(t, first)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, second)
}

// TestExecPersistentRaise: an exception in a `with task:` body fails that
// task only; the process serves the next.
func TestExecPersistentRaise(t *testing.T) {
	e := helperExec(t, ExecPersistent, "raise")
	var first, second int
	_, _, err := e.Train(pidCtx(context.Background(), "k", &first), execTestWeights(), execTestData(), TrainConfig{Epochs: 1, BatchSize: 2, LR: 0.1})
	if !errors.Is(err, ErrTrainerFailed) || !strings.Contains(err.Error(), "reported an error: ValueError: bad batch 5") {
		t.Fatalf("Train = %v, want the script's ValueError", err)
	}
	if _, err := e.Evaluate(pidCtx(context.Background(), "k", &second), execTestWeights(), execTestData()); err != nil {
		t.Fatalf("Evaluate after a failed task: %v", err)
	}
	if first != second {
		t.Errorf("pids %d then %d; want the same process after a reported error", first, second)
	}
}

func TestExecPersistentDeadline(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e := helperExec(t, ExecPersistent, "hang-once")
	var first, second int
	// The first task starts the process (the hello) without a deadline
	// of its own, so that a slow interpreter start is not what is timed.
	if _, err := e.Evaluate(pidCtx(context.Background(), "k", &first), execTestWeights(), execTestData()); err != nil {
		t.Fatal(err)
	}
	// Long enough for a loaded machine's Python to read the task and
	// print before it hangs.
	ctx, cancel := context.WithTimeout(pidCtx(context.Background(), "k", &first), time.Second)
	defer cancel()
	_, _, err := e.Train(ctx, execTestWeights(), execTestData(), TrainConfig{Epochs: 1, BatchSize: 2, LR: 0.1})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Train past its deadline = %v, want %v", err, context.DeadlineExceeded)
	}
	for _, w := range []string{"ran past its deadline", "then SIGKILL after 200ms", "| hanging on purpose"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Train error %q lacks %q", err, w)
		}
	}
	waitGone(t, first)
	if _, _, err := e.Train(pidCtx(context.Background(), "k", &second), execTestWeights(), execTestData(), TrainConfig{Epochs: 1, BatchSize: 2, LR: 0.1}); err != nil {
		t.Fatalf("Train after the deadline: %v", err)
	}
	if second == first {
		t.Errorf("the task after the deadline ran in the killed process %d", first)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, second)
}

func TestExecPersistentCancel(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e := helperExec(t, ExecPersistent, "hang-once")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var pid int
	ctx = WithTask(ctx, TaskInfo{Worker: "k", Started: func(p int) { pid = p; cancel() }})
	_, _, err := e.Train(ctx, execTestWeights(), execTestData(), TrainConfig{Epochs: 1, BatchSize: 2, LR: 0.1})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "was cancelled") {
		t.Fatalf("Train cancelled = %v, want %v", err, context.Canceled)
	}
	waitGone(t, pid)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestExecPersistentBadOutput(t *testing.T) {
	e := helperExec(t, ExecPersistent, "shape")
	var pid int
	_, _, err := e.Train(pidCtx(context.Background(), "k", &pid), execTestWeights(), execTestData(), TrainConfig{Epochs: 1, BatchSize: 2, LR: 0.1})
	if !errors.Is(err, ErrTrainerOutput) || !strings.Contains(err.Error(), `"w"`) || !strings.Contains(err.Error(), `on worker "k"`) {
		t.Fatalf("Train with a misshapen tensor = %v, want %v naming tensor w and the worker", err, ErrTrainerOutput)
	}
	waitGone(t, pid) // replaced: what else did it get wrong?
}

// TestExecPersistentProtocolErrors runs shell scripts that break the
// protocol after a proper hello.
func TestExecPersistentProtocolErrors(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	hello := `echo '{"hello": {"protocol": 2}}' >&4; read -r task <&3; `
	long := strings.Repeat("x", 300)
	tests := []struct {
		name, body string
		want       []string
	}{
		{"not json", hello + `echo 'epoch 1 done ` + long + `' >&4; sleep 1000`, []string{`wrote "epoch 1 done xxx`, `…`, "on its reply pipe (fd 4)"}},
		{"wrong id", hello + `echo '{"id": "nope", "ok": true}' >&4; sleep 1000`, []string{`answered task id "nope", which it was not given`}},
		{"closes fd 4", hello + `exec 4>&-; sleep 1000`, []string{"closed its reply pipe (fd 4) without exiting"}},
		{"long line", hello + `head -c 1100000 /dev/zero | tr '\0' a >&4; sleep 1000`, []string{"is 1048576 bytes or longer"}},
		{"bad hello", `echo '{"hi": 1}' >&4; sleep 1000`, []string{`its first line on the reply pipe (fd 4) is "{\"hi\": 1}"`, "model.exec.mode: per-task"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			script := writeScript(t, "w.sh", "#!/bin/sh\n"+tt.body+"\n")
			e := newTestExec(t, Config{Command: []string{script}, ExecMode: ExecPersistent})
			e.Grace = 100 * time.Millisecond
			var pid int
			start := time.Now()
			_, _, err := e.Train(pidCtx(context.Background(), "k", &pid), execTestWeights(), execTestData(), TrainConfig{Epochs: 1, BatchSize: 2, LR: 0.1})
			if !errors.Is(err, ErrTrainerProtocol) {
				t.Fatalf("Train = %v, want %v", err, ErrTrainerProtocol)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Train error %q lacks %q", err, w)
				}
			}
			if len(err.Error()) > 2000 {
				t.Errorf("Train error is %d bytes long; want the line cut", len(err.Error()))
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("Train took %v; want the error as soon as the line arrives", took)
			}
			if pid != 0 {
				waitGone(t, pid)
			}
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestExecPersistentPerTaskScript configures a per-task script (it reads
// $COHORT_TASK, a KeyError here) persistent: the first task fails at once
// and says what to do.
func TestExecPersistentPerTaskScript(t *testing.T) {
	needPython(t)
	script := writeScript(t, "trainer.py", execScriptPy)
	e := newTestExec(t, Config{Command: []string{execPython, script}, ExecMode: ExecPersistent})
	start := time.Now()
	_, err := e.Init(1)
	if !errors.Is(err, ErrTrainerProtocol) {
		t.Fatalf("Init = %v, want %v", err, ErrTrainerProtocol)
	}
	for _, w := range []string{"does not speak the persistent protocol", "model.exec.mode: per-task", "cohort_trainer", "KeyError"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Init error %q lacks %q", err, w)
		}
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Init took %v; want the error once the script exits", took)
	}

	// A script that never says hello fails at the task's deadline.
	silent := writeScript(t, "silent.sh", "#!/bin/sh\nexec sleep 1000\n")
	e = newTestExec(t, Config{Command: []string{silent}, ExecMode: ExecPersistent})
	e.Grace = 100 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := e.InitContext(ctx, 1); !errors.Is(err, ErrTrainerProtocol) || !strings.Contains(err.Error(), "sent no hello line") {
		t.Fatalf("InitContext of a silent script = %v, want %v saying it sent no hello", err, ErrTrainerProtocol)
	}
}

func TestExecStopWorker(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e := helperExec(t, ExecPersistent, "ok")
	var a, b, c int
	for key, pid := range map[string]*int{"a": &a, "b": &b} {
		if _, err := e.Evaluate(pidCtx(context.Background(), key, pid), execTestWeights(), execTestData()); err != nil {
			t.Fatal(err)
		}
	}
	e.StopWorker("a")
	waitGone(t, a)
	if gone(b) {
		t.Fatalf("StopWorker(a) stopped worker b too")
	}
	if _, err := e.Evaluate(pidCtx(context.Background(), "a", &c), execTestWeights(), execTestData()); err != nil {
		t.Fatal(err)
	}
	if c == a {
		t.Errorf("worker a still ran in pid %d after StopWorker", a)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, b)
	waitGone(t, c)
}

func TestExecIdleTimeout(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e := helperExec(t, ExecPersistent, "ok")
	e.IdleTimeout = 50 * time.Millisecond
	var pid int
	if _, err := e.Evaluate(pidCtx(context.Background(), "k", &pid), execTestWeights(), execTestData()); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

// waitGone fails unless pid is gone within 10 seconds.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			t.Errorf("process %d still runs", pid)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkExecModes trains the PyTorch example's CNN on 256 images, one
// task per iteration, in each mode; the persistent worker is started
// before the timer. It reports seconds per task, and logs their ratio.
func BenchmarkExecModes(b *testing.B) {
	needPython(b)
	if out, err := exec.Command(execPython, "-c", "import torch").CombinedOutput(); err != nil {
		b.Skipf("%s cannot import torch: %v\n%s", execPython, err, out)
	}
	script, err := filepath.Abs("../examples/pytorch-fmnist/train.py")
	if err != nil {
		b.Fatal(err)
	}
	ds := execImages(256)
	perTask := make(map[string]float64) // seconds a task by mode
	defer func() {
		if perTask[ExecPersistent] > 0 && perTask[ExecPerTask] > 0 {
			b.Logf("a per-task task takes %.1f× as long as a persistent one", perTask[ExecPerTask]/perTask[ExecPersistent])
		}
	}()
	for _, mode := range []string{ExecPerTask, ExecPersistent} {
		b.Run(mode, func(b *testing.B) {
			tr, err := New(Config{Kind: "exec", InputShape: []int{1, 28, 28}, Classes: 10, ExecMode: mode,
				Command: []string{execPython, script}, Env: map[string]string{"FMNIST_CONV": "8,16", "FMNIST_HIDDEN": "64", "FMNIST_THREADS": "1"}})
			if err != nil {
				b.Fatal(err)
			}
			e := tr.(*Exec)
			defer e.Close()
			w, err := e.Init(1)
			if err != nil {
				b.Fatal(err)
			}
			cfg := TrainConfig{Epochs: 1, BatchSize: 32, LR: 0.05, Momentum: 0.9, Seed: 1}
			if _, _, err := e.Train(context.Background(), w, ds, cfg); err != nil { // writes the data file
				b.Fatal(err)
			}
			for b.Loop() {
				if _, _, err := e.Train(context.Background(), w, ds, cfg); err != nil {
					b.Fatal(err)
				}
			}
			perTask[mode] = b.Elapsed().Seconds() / float64(b.N)
			b.ReportMetric(perTask[mode], "s/task")
		})
	}
}

// execImages is n random 28×28 images in 10 classes.
func execImages(n int) *data.Dataset {
	ds := &data.Dataset{Name: "images", N: n, Features: 784, Shape: []int{1, 28, 28}, Classes: 10}
	ds.X = make([]float32, n*784)
	for i := range ds.X {
		ds.X[i] = float32(i%251) / 251
	}
	ds.Y = make([]uint8, n)
	for i := range ds.Y {
		ds.Y[i] = uint8(i % 10)
	}
	return ds
}
