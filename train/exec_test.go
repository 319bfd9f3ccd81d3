package train

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/model"
)

// execPython is the interpreter of the Python test scripts: Debian's, as
// the example job uses. The scripts need only its standard library.
const execPython = "/usr/bin/python3"

// execScriptPy is a stdlib-only exec trainer. Train adds 1 to every
// weight and writes the tensors in reverse order; MODE makes it
// misbehave. It reports what it saw of the data as extra metrics.
const execScriptPy = `
import array, json, os, struct, sys
task = json.load(open(os.environ["COHORT_TASK"]))
mode = os.environ.get("MODE", "ok")

def read(path):
    b = open(path, "rb").read()
    n = struct.unpack_from("<Q", b)[0]
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    out = {}
    for k, v in sorted(h.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        s, e = v["data_offsets"]
        a = array.array("f")
        a.frombytes(b[8 + n + s:8 + n + e])
        out[k] = (v["shape"], a)
    return out

def write(path, ts):
    h, off = {}, 0
    for name, shape, a in ts:
        h[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + 4 * len(a)]}
        off += 4 * len(a)
    hb = json.dumps(h).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for _, _, a in ts:
            f.write(a.tobytes())

def metrics(m):
    with open(task["metrics_out"], "w") as f:
        if mode == "badjson":
            f.write("{not json")
        else:
            json.dump(m, f)

if task["kind"] == "init":
    write(task["weights_out"], [("a", [2, 2], array.array("f", [float(task["seed"])] * 4)), ("b", [3], array.array("f", [0, 0, 0]))])
    sys.exit(0)
w = read(task["weights_in"])
xs, x = read(task["data"]["train" if task["kind"] == "train" else "test"])["x"]
ys, y = read(task["data"]["train" if task["kind"] == "train" else "test"])["y"]
m = {"x_sum": sum(x), "y_sum": sum(y), "x_dims": len(xs), "n": ys[0],
     "env_num": float(os.environ.get("COHORT_TEST_NUM", "0")), "note": "strings are ignored"}
if task["kind"] == "evaluate":
    m.update(loss=0.25, accuracy=0.75)
    metrics(m)
    sys.exit(0)
print("COHORT_PROGRESS " + json.dumps({"epoch": 1, "batch": 2, "batches": 3, "loss": 0.5}))
print("hello from stdout")
out = [(k, s, array.array("f", [v + 1 for v in a])) for k, (s, a) in w.items()]
out.reverse()
if mode == "shape":
    out = [(k, [len(a)] if k == "w" else s, a) for k, s, a in out]
if mode == "nan":
    out[0][2][0] = float("nan")
if mode == "extra":
    out.append(("surprise", [1], array.array("f", [1])))
if mode != "noweights":
    write(task["weights_out"], out)
m.update(train_loss=0.5, steps=3, num_samples=len(y))
if mode == "nanloss":
    m["train_loss"] = float("nan")
if mode != "nometrics":
    metrics(m)
`

func needPython(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(execPython); err != nil {
		t.Skipf("%s is not installed (apt-get install python3): %v", execPython, err)
	}
}

// execTestData is 5 samples of shape [2 3] in 3 classes.
func execTestData() *data.Dataset {
	ds := &data.Dataset{Name: "tiny", N: 5, Features: 6, Shape: []int{2, 3}, Classes: 3}
	for i := range 30 {
		ds.X = append(ds.X, float32(i)/30)
	}
	ds.Y = []uint8{0, 1, 2, 1, 0}
	return ds
}

func execTestWeights() *model.Weights {
	return &model.Weights{Tensors: []model.Tensor{
		{Name: "w", Shape: []int{3, 6}, Data: make([]float32, 18)},
		{Name: "b", Shape: []int{3}, Data: []float32{1, 2, 3}},
	}}
}

// writeScript writes an executable file into a new temporary folder.
func writeScript(t testing.TB, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// newTestExec returns an exec trainer for [2 3] samples in 3 classes.
func newTestExec(t testing.TB, cfg Config) *Exec {
	t.Helper()
	cfg.Kind, cfg.InputShape, cfg.Classes = "exec", []int{2, 3}, 3
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	tr, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%v): %v", cfg.Command, err)
	}
	e := tr.(*Exec)
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e
}

// pythonExec is an exec trainer running execScriptPy with MODE=mode.
func pythonExec(t testing.TB, mode string) *Exec {
	needPython(t)
	script := writeScript(t, "trainer.py", execScriptPy)
	return newTestExec(t, Config{Command: []string{execPython, script}, Env: map[string]string{"MODE": mode}})
}

func TestExecTrain(t *testing.T) {
	needPython(t)
	dir := t.TempDir()
	work := filepath.Join(t.TempDir(), "work")
	writeScript(t, "unused", "") // the script lives in dir, found through Dir
	if err := os.WriteFile(filepath.Join(dir, "trainer.py"), []byte(execScriptPy), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newTestExec(t, Config{
		Command: []string{execPython, "trainer.py"}, Dir: dir, WorkDir: work,
		Env: map[string]string{"COHORT_TEST_NUM": "42"},
	})
	ds, w := execTestData(), execTestWeights()
	var progress []string
	cfg := TrainConfig{Epochs: 1, BatchSize: 2, LR: 0.1, Seed: 3, Progress: func(epoch, batch, batches int, loss float64) {
		progress = append(progress, fmt.Sprintf("%d %d/%d %g", epoch, batch, batches, loss))
	}}
	got, res, err := e.Train(context.Background(), w, ds, cfg)
	if err != nil {
		t.Fatalf("Train: %v", err)
	}
	want := execTestWeights()
	for i := range want.Tensors {
		for j := range want.Tensors[i].Data {
			want.Tensors[i].Data[j]++
		}
	}
	// The script wrote the tensors in reverse order; they come back in
	// the input's.
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Train weights (-want +got):\n%s", diff)
	}
	if w.Tensors[1].Data[0] != 1 {
		t.Errorf("Train modified its input: b[0] = %v, want 1", w.Tensors[1].Data[0])
	}
	var xSum float64
	for _, v := range ds.X {
		xSum += float64(v)
	}
	wantMetrics := map[string]float64{"x_sum": xSum, "y_sum": 4, "x_dims": 3, "n": 5, "env_num": 42}
	if diff := cmp.Diff(wantMetrics, res.Metrics); diff != "" {
		t.Errorf("Train extra metrics (-want +got):\n%s", diff)
	}
	if res.NumSamples != 5 || res.Loss != 0.5 || res.Steps != 3 || res.Epochs != 1 {
		t.Errorf("Train result = %+v, want 5 samples, loss 0.5, 3 steps, 1 epoch", res)
	}
	if !(res.Seconds > 0 && res.CPUSeconds > 0 && res.CPUSeconds < 60) {
		t.Errorf("Train result: %v s wall, %v s CPU; want both > 0", res.Seconds, res.CPUSeconds)
	}
	if diff := cmp.Diff([]string{"1 2/3 0.5"}, progress); diff != "" {
		t.Errorf("Progress calls (-want +got):\n%s", diff)
	}

	// A second task on the same data reuses its file; other data gets one.
	if _, _, err := e.Train(context.Background(), w, ds, cfg); err != nil {
		t.Fatalf("second Train: %v", err)
	}
	files := func() int {
		m, _ := filepath.Glob(filepath.Join(work, "data-*.safetensors"))
		return len(m)
	}
	if n := files(); n != 1 {
		t.Errorf("after two tasks on one dataset: %d dataset files, want 1", n)
	}
	other := execTestData()
	other.Y[0] = 2
	ev, err := e.Evaluate(context.Background(), w, other)
	if err != nil {
		t.Fatalf("Evaluate: %v", err)
	}
	if want := (EvalResult{NumSamples: 5, Loss: 0.25, Accuracy: 0.75, Seconds: ev.Seconds, CPUSeconds: ev.CPUSeconds, Metrics: ev.Metrics}); !reflect.DeepEqual(ev, want) || ev.CPUSeconds <= 0 || ev.Seconds <= 0 {
		t.Errorf("Evaluate = %+v, want %+v with CPU seconds > 0", ev, want)
	}
	if n := files(); n != 2 {
		t.Errorf("after a task on other data: %d dataset files, want 2", n)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if n := files(); n != 0 {
		t.Errorf("after Close: %d dataset files, want 0", n)
	}
	if left, _ := os.ReadDir(work); len(left) != 0 {
		t.Errorf("after Close the work dir holds %d entries, want none (task folders are removed after each task)", len(left))
	}
}

// modelFile writes w to a file as TrainFile takes it and returns its
// path, its shell and a path for the update.
func modelFile(t *testing.T, w *model.Weights) (in string, shell *model.Weights, out string) {
	t.Helper()
	dir := t.TempDir()
	in, out = filepath.Join(dir, "global.safetensors"), filepath.Join(dir, "update.safetensors")
	if err := model.WriteSafetensorsFile(in, w, nil); err != nil {
		t.Fatal(err)
	}
	shell = &model.Weights{}
	for _, tn := range w.Tensors {
		shell.Tensors = append(shell.Tensors, model.Tensor{Name: tn.Name, Shape: tn.Shape})
	}
	return in, shell, out
}

// TestExecTrainFile: training from a model file writes, byte for byte,
// the encoding of what Train returns — the per-task script's tensors,
// written in reverse order, back in the model's — and reports what Train
// reports; EvaluateFile reports what Evaluate does; in both modes.
func TestExecTrainFile(t *testing.T) {
	for _, tc := range []struct {
		mode string
		exec func(t *testing.T) *Exec
	}{
		{ExecPerTask, func(t *testing.T) *Exec { return pythonExec(t, "ok") }},
		{ExecPersistent, func(t *testing.T) *Exec { return helperExec(t, ExecPersistent, "ok") }},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			e := tc.exec(t)
			ctx := WithTask(context.Background(), TaskInfo{Worker: "site-1/job/fedavg"})
			ds, w := execTestData(), execTestWeights()
			cfg := TrainConfig{Epochs: 1, BatchSize: 2, LR: 0.1, Seed: 3}
			want, wantRes, err := e.Train(ctx, w, ds, cfg)
			if err != nil {
				t.Fatalf("Train: %v", err)
			}
			wantB, err := model.MarshalSafetensors(want, nil)
			if err != nil {
				t.Fatal(err)
			}
			in, shell, out := modelFile(t, w)
			res, err := e.TrainFile(ctx, in, shell, ds, cfg, out)
			if err != nil {
				t.Fatalf("TrainFile: %v", err)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, wantB) {
				t.Errorf("TrainFile wrote %d bytes that differ from Train's result's %d", len(got), len(wantB))
			}
			res.Seconds, res.CPUSeconds, wantRes.Seconds, wantRes.CPUSeconds = 0, 0, 0, 0
			delete(res.Metrics, "trainer_seconds")
			delete(wantRes.Metrics, "trainer_seconds")
			if diff := cmp.Diff(wantRes, res); diff != "" {
				t.Errorf("TrainFile result (-Train's +TrainFile's):\n%s", diff)
			}
			wantEv, err := e.Evaluate(ctx, w, ds)
			if err != nil {
				t.Fatalf("Evaluate: %v", err)
			}
			ev, err := e.EvaluateFile(ctx, in, ds)
			if err != nil {
				t.Fatalf("EvaluateFile: %v", err)
			}
			ev.Seconds, ev.CPUSeconds, wantEv.Seconds, wantEv.CPUSeconds = 0, 0, 0, 0
			delete(ev.Metrics, "trainer_seconds")
			delete(wantEv.Metrics, "trainer_seconds")
			if diff := cmp.Diff(wantEv, ev); diff != "" {
				t.Errorf("EvaluateFile result (-Evaluate's +EvaluateFile's):\n%s", diff)
			}
		})
	}
}

// TestExecInitFile: InitFile writes, byte for byte, the encoding of what
// InitContext returns.
func TestExecInitFile(t *testing.T) {
	e := pythonExec(t, "ok")
	want, err := e.InitContext(context.Background(), 7)
	if err != nil {
		t.Fatalf("InitContext: %v", err)
	}
	wantB, err := model.MarshalSafetensors(want, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "init.safetensors")
	if err := e.InitFile(context.Background(), 7, out); err != nil {
		t.Fatalf("InitFile: %v", err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, wantB) {
		t.Errorf("InitFile wrote %d bytes that differ from InitContext's result's %d", len(got), len(wantB))
	}
}

func TestExecInit(t *testing.T) {
	e := pythonExec(t, "ok")
	got, err := e.Init(7)
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	want := &model.Weights{Tensors: []model.Tensor{
		{Name: "a", Shape: []int{2, 2}, Data: []float32{7, 7, 7, 7}},
		{Name: "b", Shape: []int{3}, Data: []float32{0, 0, 0}},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Init(7) (-want +got):\n%s", diff)
	}
}

// TestExecBadOutput runs scripts that exit 0 with wrong outputs.
func TestExecBadOutput(t *testing.T) {
	needPython(t)
	for _, tc := range []struct {
		mode string
		is   error // besides ErrTrainerOutput
		want string
	}{
		{"shape", model.ErrIncompatible, `tensor "w" has shape [18], want [3 6]`},
		{"extra", model.ErrIncompatible, `tensor "surprise"`},
		{"nan", model.ErrNotFinite, "not all finite"},
		{"noweights", nil, "wrote no weights"},
		{"nometrics", nil, "wrote no metrics"},
		{"badjson", nil, "not a JSON object"},
		{"nanloss", nil, "NaN or Infinity"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			e := pythonExec(t, tc.mode)
			cfg := TrainConfig{Epochs: 1, BatchSize: 2, LR: 0.1}
			_, _, err := e.Train(context.Background(), execTestWeights(), execTestData(), cfg)
			in, shell, out := modelFile(t, execTestWeights())
			_, errFile := e.TrainFile(context.Background(), in, shell, execTestData(), cfg, out)
			for _, c := range []struct {
				call string
				err  error
			}{{"Train", err}, {"TrainFile", errFile}} {
				if !errors.Is(c.err, ErrTrainerOutput) || (tc.is != nil && !errors.Is(c.err, tc.is)) {
					t.Fatalf("%s with MODE=%s: error %v, want one wrapping %v and %v", c.call, tc.mode, c.err, ErrTrainerOutput, tc.is)
				}
				if !strings.Contains(c.err.Error(), tc.want) {
					t.Errorf("%s with MODE=%s: error %q lacks %q", c.call, tc.mode, c.err, tc.want)
				}
			}
		})
	}
}

func TestExecCommandNotFound(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "train.sh")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cmd  []string
		dir  string
		want string
	}{
		{[]string{"cohort-no-such-trainer"}, "", `"cohort-no-such-trainer" is not on the site's PATH`},
		{[]string{"/nonexistent/python3", "train.py"}, "", "/nonexistent/python3 does not exist"},
		{[]string{"./missing.sh"}, dir, filepath.Join(dir, "missing.sh") + " does not exist"},
		{[]string{notExec}, "", "is not executable; chmod +x"},
		{[]string{dir}, "", "is a folder"},
	} {
		_, err := New(Config{Kind: "exec", Command: tc.cmd, Dir: tc.dir, InputShape: []int{2}, Classes: 2})
		if !errors.Is(err, ErrCommandNotFound) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(command %v) = %v, want %v containing %q", tc.cmd, err, ErrCommandNotFound, tc.want)
		}
	}
	for _, cmd := range [][]string{nil, {""}, {"  ", "x"}} {
		if _, err := New(Config{Kind: "exec", Command: cmd, InputShape: []int{2}, Classes: 2}); !errors.Is(err, ErrConfig) {
			t.Errorf("New(command %q) = %v, want %v", cmd, err, ErrConfig)
		}
	}
	if _, err := New(Config{Kind: "exec", Command: []string{"/bin/sh"}, Env: map[string]string{"A=B": "c"}, InputShape: []int{2}, Classes: 2}); !errors.Is(err, ErrConfig) {
		t.Errorf("New(env A=B) = %v, want %v", err, ErrConfig)
	}

	// A program removed after New is reported when the task starts.
	script := writeScript(t, "gone.sh", "#!/bin/sh\n")
	e := newTestExec(t, Config{Command: []string{script}})
	os.Remove(script)
	_, _, err := e.Train(context.Background(), execTestWeights(), execTestData(), TrainConfig{Epochs: 1, BatchSize: 1, LR: 0.1})
	if !errors.Is(err, ErrCommandNotFound) || !strings.Contains(err.Error(), "install it") {
		t.Errorf("Train with a removed program: %v, want %v saying how to fix it", err, ErrCommandNotFound)
	}
}

func TestExecFailure(t *testing.T) {
	for _, tc := range []struct {
		name, script string
		want         []string
	}{
		{"exit code", "#!/bin/sh\necho first >&2\ni=0; while [ $i -lt 80 ]; do echo \"noise $i\" >&2; i=$((i+1)); done\necho 'ValueError: boom' >&2\nexit 3\n",
			[]string{"exited with code 3", "stderr ended with:", "noise 79\n  | ValueError: boom"}},
		{"reported error", "#!/bin/sh\nm=$(sed -n 's/.*\"metrics_out\": \"\\(.*\\)\".*/\\1/p' \"$COHORT_TASK\")\necho '{\"error\": \"CUDA out of memory\"}' > \"$m\"\nexit 1\n",
			[]string{"exited with code 1 after", ": CUDA out of memory; it wrote nothing to stderr"}},
		{"signal", "#!/bin/sh\necho dying >&2\nkill -SEGV $$\n",
			[]string{"killed by signal segmentation fault", "| dying"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestExec(t, Config{Command: []string{writeScript(t, "train.sh", tc.script)}})
			_, _, err := e.Train(context.Background(), execTestWeights(), execTestData(), TrainConfig{Epochs: 1, BatchSize: 1, LR: 0.1})
			if !errors.Is(err, ErrTrainerFailed) {
				t.Fatalf("Train = %v, want %v", err, ErrTrainerFailed)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Train error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "| first") {
				t.Errorf("Train error keeps more than the last %d lines of stderr: %q", execTailLines, err)
			}
		})
	}
}

// gone reports whether pid no longer runs: reaped, or a zombie left to
// the system's init.
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] == "Z"
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the script did not write its pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// checkReaped fails unless the leader was reaped by the trainer and its
// child is dead.
func checkReaped(t *testing.T, leader, child int) {
	t.Helper()
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(leader, &ws, syscall.WNOHANG, nil); !errors.Is(err, syscall.ECHILD) {
		t.Errorf("Wait4(%d) = %v, want ECHILD: the trainer left its process unreaped", leader, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !gone(child) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !gone(child) {
		t.Errorf("the script's child %d still runs after the task ended", child)
		syscall.Kill(child, syscall.SIGKILL)
	}
}

// TestExecDeadline runs a script that ignores SIGTERM, as does its child:
// past the deadline both get SIGKILL after the grace period.
func TestExecDeadline(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	script := writeScript(t, "hang.sh", fmt.Sprintf("#!/bin/sh\ntrap '' TERM\necho $$ > %s/leader\nsleep 1000 &\necho $! > %s/child\necho stuck >&2\nwait\n", dir, dir))
	e := newTestExec(t, Config{Command: []string{script}})
	e.Grace = 100 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := e.Train(ctx, execTestWeights(), execTestData(), TrainConfig{Epochs: 1, BatchSize: 1, LR: 0.1})
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Train past its deadline = %v, want %v", err, context.DeadlineExceeded)
	}
	for _, w := range []string{"ran past its deadline", "then SIGKILL after 100ms", "| stuck"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Train error %q lacks %q", err, w)
		}
	}
	if took > 5*time.Second {
		t.Errorf("Train returned %v after it started, want soon after the 500ms deadline and 100ms grace", took)
	}
	checkReaped(t, readPid(t, dir+"/leader"), readPid(t, dir+"/child"))
}

// TestExecCancel cancels a task whose script exits on SIGTERM.
func TestExecCancel(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	script := writeScript(t, "wait.sh", fmt.Sprintf("#!/bin/sh\ntrap 'echo got TERM >&2; exit 143' TERM\necho $$ > %s/leader\nsleep 1000 &\necho $! > %s/child\necho started\nwait\n", dir, dir))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := &recordHandler{on: func(r slog.Record) {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "line" && a.Value.String() == "started" {
				cancel()
			}
			return true
		})
	}}
	e := newTestExec(t, Config{Command: []string{script}, Logger: slog.New(h)})
	e.Grace = time.Minute // it exits on SIGTERM: no SIGKILL needed
	start := time.Now()
	_, _, err := e.Train(ctx, execTestWeights(), execTestData(), TrainConfig{Epochs: 1, BatchSize: 1, LR: 0.1})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Train = %v, want %v", err, context.Canceled)
	}
	for _, w := range []string{"was cancelled", "(sent SIGTERM)", "| got TERM"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Train error %q lacks %q", err, w)
		}
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("cancelled Train returned after %v, want well before the 1-minute grace", took)
	}
	checkReaped(t, readPid(t, dir+"/leader"), readPid(t, dir+"/child"))

	// A context done before the call starts nothing.
	if _, err := e.Evaluate(ctx, execTestWeights(), execTestData()); !errors.Is(err, context.Canceled) {
		t.Errorf("Evaluate with a cancelled context = %v, want %v", err, context.Canceled)
	}
}

// TestExecKillsStragglers: a script that exits but leaves a child holding
// its stdout returns at once, and the child is killed with its group.
func TestExecKillsStragglers(t *testing.T) {
	needPython(t)
	dir := t.TempDir()
	py := writeScript(t, "trainer.py", execScriptPy)
	script := writeScript(t, "wrap.sh", fmt.Sprintf("#!/bin/sh\necho $$ > %s/leader\nsleep 1000 &\necho $! > %s/child\nexec %s %s\n", dir, dir, execPython, py))
	e := newTestExec(t, Config{Command: []string{script}})
	e.Grace = time.Minute
	start := time.Now()
	if _, _, err := e.Train(context.Background(), execTestWeights(), execTestData(), TrainConfig{Epochs: 1, BatchSize: 1, LR: 0.1}); err != nil {
		t.Fatalf("Train: %v", err)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("Train took %v: it waited for the straggler's pipes instead of killing it", took)
	}
	checkReaped(t, readPid(t, dir+"/leader"), readPid(t, dir+"/child"))
}

// TestExecOutputBounded: a script printing 50 MB to stdout in 64 KiB lines
// and 20 MB to stderr without a newline leaves the site's heap where it
// was, give or take a few MB.
func TestExecOutputBounded(t *testing.T) {
	script := writeScript(t, "loud.sh", `#!/bin/sh
line=$(head -c 65535 /dev/zero | tr '\0' x)
yes "$line" | head -c 52428800
head -c 20971520 /dev/zero | tr '\0' y >&2
exit 1
`)
	h := &recordHandler{}
	e := newTestExec(t, Config{Command: []string{script}, Logger: slog.New(h)})
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	_, _, err := e.Train(context.Background(), execTestWeights(), execTestData(), TrainConfig{Epochs: 1, BatchSize: 1, LR: 0.1})
	close(stop)
	wg.Wait()
	if !errors.Is(err, ErrTrainerFailed) {
		t.Fatalf("Train = %v, want %v", err, ErrTrainerFailed)
	}
	if len(err.Error()) > execTailBytes+1024 {
		t.Errorf("the error is %d bytes long, want at most about %d", len(err.Error()), execTailBytes)
	}
	if grew := int64(peak) - int64(base); grew > 16<<20 {
		t.Errorf("the heap grew by %d MB while the script printed 70 MB, want under 16 MB", grew>>20)
	}
	lines, cut, maxLen := h.stats()
	// 52428800 bytes in lines of 65536: 800 lines; the stderr line is one.
	if lines != 801 || cut != 801 || maxLen != execMaxLine {
		t.Errorf("logged %d lines (%d cut, longest %d bytes), want 801, all cut to %d bytes", lines, cut, maxLen, execMaxLine)
	}
}

// recordHandler is a slog.Handler that counts trainer output lines and
// calls on for every record.
type recordHandler struct {
	on func(slog.Record)

	mu                  sync.Mutex
	lines, cut, longest int
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	if h.on != nil {
		h.on(r)
	}
	if r.Message != "trainer_output" {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lines++
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "cut":
			if a.Value.Bool() {
				h.cut++
			}
		case "line":
			h.longest = max(h.longest, len(a.Value.String()))
		}
		return true
	})
	return nil
}

func (h *recordHandler) stats() (lines, cut, longest int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lines, h.cut, h.longest
}

func TestLineWriter(t *testing.T) {
	long := strings.Repeat("a", execMaxLine+10)
	for _, tc := range []struct {
		name   string
		writes []string
		want   []string
	}{
		{"lines", []string{"a\nb\n"}, []string{"a", "b"}},
		{"split writes", []string{"a", "b\nc", "d\n"}, []string{"ab", "cd"}},
		{"crlf", []string{"a\r\n"}, []string{"a"}},
		{"unterminated", []string{"a\nb"}, []string{"a", "b"}},
		{"empty line", []string{"\n\n"}, []string{"", ""}},
		{"long", []string{long[:100], long[100:] + "\nz\n"}, []string{long[:execMaxLine] + " (cut)", "z"}},
	} {
		var got []string
		w := newLineWriter(func(s string, cut bool) {
			if cut {
				s += " (cut)"
			}
			got = append(got, s)
		})
		for _, s := range tc.writes {
			if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
				t.Errorf("%s: Write(%d bytes) = %d, %v; want %d, nil", tc.name, len(s), n, err, len(s))
			}
		}
		w.flush()
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s: lines (-want +got):\n%s", tc.name, diff)
		}
	}
}

func TestTailLines(t *testing.T) {
	var tl tailLines
	tl.max = 3
	if got, want := tl.suffix(), "; it wrote nothing to stderr"; got != want {
		t.Errorf("empty tail = %q, want %q", got, want)
	}
	for i := range 5 {
		tl.add(strconv.Itoa(i))
	}
	if got, want := tl.suffix(), "; stderr ended with:\n  | 2\n  | 3\n  | 4"; got != want {
		t.Errorf("tail of 0..4 keeping 3 = %q, want %q", got, want)
	}
	tl = tailLines{max: execTailLines}
	for range execTailLines {
		tl.add(strings.Repeat("x", execMaxLine))
	}
	if got := len(tl.suffix()); got > execTailBytes+100 {
		t.Errorf("tail of %d long lines is %d bytes, want at most about %d", execTailLines, got, execTailBytes)
	}
}

func TestParseExecMetrics(t *testing.T) {
	for _, tc := range []struct {
		kind, in string
		want     execMetrics
		err      string
	}{
		{"train", `{"train_loss": 0.5, "num_samples": 3, "steps": 7, "extra": 2, "device": "cuda"}`,
			execMetrics{numSamples: 3, trainLoss: 0.5, steps: 7, extra: map[string]float64{"extra": 2}}, ""},
		{"train", `{"train_loss": 0.5}`, execMetrics{numSamples: 10, trainLoss: 0.5}, ""},
		{"evaluate", `{"loss": 1, "accuracy": 0.5}`, execMetrics{numSamples: 10, loss: 1, accuracy: 0.5}, ""},
		{"init", `{}`, execMetrics{numSamples: 10}, ""},
		{"train", `{}`, execMetrics{}, `"train_loss" is missing`},
		{"train", `{"train_loss": "0.5"}`, execMetrics{}, `"train_loss" holds "0.5"; want a number`},
		{"train", `{"train_loss": NaN}`, execMetrics{}, "NaN or Infinity"},
		{"train", `{"train_loss": 1, "num_samples": 2.5}`, execMetrics{}, "positive whole number"},
		{"train", `{"train_loss": 1, "num_samples": 0}`, execMetrics{}, "positive whole number"},
		{"evaluate", `{"loss": 1, "accuracy": 75}`, execMetrics{}, "want a fraction in [0, 1]"},
		{"evaluate", `{"accuracy": 0.5}`, execMetrics{}, `"loss" is missing`},
		{"train", `[1, 2]`, execMetrics{}, "not a JSON object"},
		{"train", `{"train_loss": 1}{`, execMetrics{}, "after the object"},
		{"train", ``, execMetrics{}, "not a JSON object"},
	} {
		got, err := parseExecMetrics([]byte(tc.in), tc.kind, 10)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseExecMetrics(%s, %s) error = %v, want one containing %q", tc.kind, tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseExecMetrics(%s, %s) error = %v, want none", tc.kind, tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(execMetrics{})); diff != "" {
			t.Errorf("parseExecMetrics(%s, %s) (-want +got):\n%s", tc.kind, tc.in, diff)
		}
	}
}

func FuzzParseExecMetrics(f *testing.F) {
	for _, s := range []string{
		`{"train_loss": 0.5, "num_samples": 3, "steps": 7, "x": 1}`,
		`{"loss": 1, "accuracy": 0.5}`,
		`{"error": "boom"}`, `{"num_samples": 1e300}`, `{"accuracy": -1}`, `[]`, `null`, `{"a": {"b": [1]}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, kind := range []string{"init", "train", "evaluate"} {
			m, err := parseExecMetrics(b, kind, 4)
			if err != nil {
				continue
			}
			if m.numSamples < 1 || math.IsNaN(m.trainLoss) || math.IsNaN(m.loss) || !(m.accuracy >= 0 && m.accuracy <= 1) {
				t.Errorf("parseExecMetrics(%q, %s) accepted %+v", b, kind, m)
			}
		}
	})
}
