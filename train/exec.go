package train

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"weak"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/model"
)

// Defaults of the exec trainer's knobs.
const (
	// DefaultExecGrace is how long a trainer process has between SIGTERM
	// and SIGKILL.
	DefaultExecGrace = 5 * time.Second
	// DefaultExecInitTimeout bounds Init, which takes no context.
	DefaultExecInitTimeout = 10 * time.Minute

	// ExecProtocolVersion is the "version" field of the task file.
	ExecProtocolVersion = 1
	// ExecProgressPrefix starts a stdout line that reports progress:
	// the prefix, a space and {"epoch", "batch", "batches", "loss"}.
	ExecProgressPrefix = "COHORT_PROGRESS"

	execMaxLine    = 4 << 10 // longer output lines are cut
	execTailLines  = 50      // stderr lines kept for the error message
	execTailBytes  = 8 << 10 // at most this much of them goes into it
	execDataFiles  = 8       // unused dataset files kept in the work dir
	execEvalBatch  = 256     // batch_size in an evaluate task
	execMaxCommand = 120     // characters of the command shown in errors
	execMaxMetrics = 1 << 20 // bytes of a metrics file
)

// Exec is the external-process trainer (model kind "exec"): each Init,
// Train and Evaluate call runs the configured command once, handing it the
// weights and data as safetensors files and a JSON task file named by the
// COHORT_TASK environment variable, and reads back the weights and metrics
// it writes. docs/trainer-protocol.md is the contract.
//
// The command runs in its own process group with the site's environment
// plus [Config.Env]. Its stdout and stderr go to the logger line by line
// (lines cut at 4 KiB); the last 50 lines of stderr end the error of a
// failed call. When the call's context is done the group gets SIGTERM,
// then SIGKILL after [Exec.Grace]; when the command exits, whatever is
// left of its group is killed. The returned weights have been checked
// against the input: same tensor names and shapes (in any order in the
// file; returned in the input's order), all finite.
//
// Exec is safe for concurrent use: every call has its own folder under the
// work dir. Datasets are written once per content (keyed by
// [data.Dataset.Digest] and shape) and must not change in place while the
// trainer uses them.
type Exec struct {
	// Grace is how long the process group has to exit after SIGTERM before
	// SIGKILL; default [DefaultExecGrace]. Set it before the first call.
	Grace time.Duration
	// InitTimeout bounds Init, and InitContext when its context has no
	// deadline; default [DefaultExecInitTimeout]. Set it before the first
	// call.
	InitTimeout time.Duration
	// IdleTimeout stops a persistent worker that has waited this long for
	// its next task; default [DefaultExecIdleTimeout]. Set it before the
	// first call.
	IdleTimeout time.Duration

	command    []string
	env        []string // "K=V", sorted by key
	dir        string
	workDir    string // as configured; "" = a temporary folder
	log        *slog.Logger
	inputShape []int
	classes    int
	persistent bool // Config.ExecMode is ExecPersistent

	mu      sync.Mutex
	scratch string               // the work dir in use, made on first use
	ownDir  bool                 // scratch is a temporary folder of ours
	files   map[string]*dataFile // by dataset key
	digests map[weak.Pointer[data.Dataset]]digestMemo
	tick    int64

	wmu     sync.Mutex
	workers map[string]*execWorker // persistent workers by key
	taskID  atomic.Uint64          // the last task line's id
}

var _ Trainer = (*Exec)(nil)

// dataFile is a dataset written for the process, shared by the calls that
// use the same data.
type dataFile struct {
	path  string
	ready chan struct{} // closed once written
	err   error         // set before ready is closed
	refs  int           // calls using it; guarded by Exec.mu
	used  int64         // Exec.tick at the last release; guarded by Exec.mu
}

type digestMemo struct {
	key string
	n   int
}

// NewExec returns the exec trainer cfg describes: cfg.Command must name a
// program that exists (on the site's PATH, or a path, relative ones
// against cfg.Dir).
func NewExec(cfg Config) (*Exec, error) {
	if len(cfg.Command) == 0 || strings.TrimSpace(cfg.Command[0]) == "" {
		return nil, fmt.Errorf("%w: an exec model needs a command, e.g. [python3, train.py]", ErrConfig)
	}
	e := &Exec{
		Grace:       DefaultExecGrace,
		InitTimeout: DefaultExecInitTimeout,
		command:     slices.Clone(cfg.Command),
		log:         cfg.Logger,
		inputShape:  slices.Clone(cfg.InputShape),
		classes:     cfg.Classes,
		persistent:  cfg.ExecMode == ExecPersistent,
		files:       make(map[string]*dataFile),
		digests:     make(map[weak.Pointer[data.Dataset]]digestMemo),
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	switch cfg.ExecMode {
	case "", ExecPerTask, ExecPersistent:
	default:
		return nil, fmt.Errorf("%w: exec mode %q; use %q or %q", ErrConfig, cfg.ExecMode, ExecPerTask, ExecPersistent)
	}
	for k, v := range cfg.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return nil, fmt.Errorf("%w: environment variable %q: names must be non-empty without '=' and values without NUL", ErrConfig, k)
		}
		e.env = append(e.env, k+"="+v)
	}
	sort.Strings(e.env)
	var err error
	if cfg.Dir != "" {
		if e.dir, err = filepath.Abs(cfg.Dir); err != nil {
			return nil, fmt.Errorf("%w: trainer directory %q: %v", ErrConfig, cfg.Dir, err)
		}
		if st, err := os.Stat(e.dir); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("%w: trainer directory %s is not a folder; create it or fix the job file's location", ErrConfig, e.dir)
		}
	}
	if cfg.WorkDir != "" {
		if e.workDir, err = filepath.Abs(cfg.WorkDir); err != nil {
			return nil, fmt.Errorf("%w: work directory %q: %v", ErrConfig, cfg.WorkDir, err)
		}
	}
	if err := e.checkProgram(); err != nil {
		return nil, err
	}
	return e, nil
}

// checkProgram reports a program that cannot be started, before any task.
func (e *Exec) checkProgram() error {
	prog := e.command[0]
	if !strings.ContainsRune(prog, os.PathSeparator) {
		if _, err := exec.LookPath(prog); err != nil {
			return fmt.Errorf("%w: %q is not on the site's PATH (%v); install it or put its full path first in model.command", ErrCommandNotFound, prog, err)
		}
		return nil
	}
	path := prog
	if !filepath.IsAbs(path) && e.dir != "" {
		path = filepath.Join(e.dir, path)
	}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %s does not exist; install it or fix the first entry of model.command (relative paths start from %s)", ErrCommandNotFound, path, e.workingDir())
	case err != nil:
		return fmt.Errorf("%w: %s: %v", ErrCommandNotFound, path, err)
	case st.IsDir():
		return fmt.Errorf("%w: %s is a folder, not a program; fix the first entry of model.command", ErrCommandNotFound, path)
	case st.Mode()&0o111 == 0:
		return fmt.Errorf("%w: %s is not executable; chmod +x it or run it through its interpreter, e.g. [python3, %s]", ErrCommandNotFound, path, prog)
	}
	return nil
}

func (e *Exec) workingDir() string {
	if e.dir != "" {
		return e.dir
	}
	if wd, err := os.Getwd(); err == nil {
		return wd
	}
	return "the site's working directory"
}

// Close stops the persistent workers (as [Exec.StopWorker] does) and
// removes the files the trainer wrote: the temporary work dir, or the
// dataset files in a configured one. It must not run concurrently with a
// call; the trainer stays usable and writes its files again if called.
func (e *Exec) Close() error {
	e.stopWorkers()
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	if e.scratch != "" && e.ownDir {
		errs = append(errs, os.RemoveAll(e.scratch))
	} else {
		for _, f := range e.files {
			if err := os.Remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	e.scratch, e.ownDir = "", false
	clear(e.files)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("removing the exec trainer's files: %w", err)
	}
	return nil
}

// Init runs an "init" task and returns the weights the command wrote;
// it is InitContext without a context.
func (e *Exec) Init(seed int64) (*model.Weights, error) {
	return e.InitContext(context.Background(), seed)
}

// InitContext runs an "init" task for ctx's [TaskInfo] and returns the
// weights the command wrote. Without a deadline in ctx, [Exec.InitTimeout]
// bounds it.
func (e *Exec) InitContext(ctx context.Context, seed int64) (*model.Weights, error) {
	ctx, cancel := e.initDeadline(ctx)
	defer cancel()
	w, _, _, err := e.run(ctx, execTask{Kind: "init", Seed: seed}, nil, nil, nil, nil)
	if err != nil {
		return nil, err
	}
	return w, nil
}

// initDeadline gives an init task without a deadline InitTimeout.
func (e *Exec) initDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	timeout := e.InitTimeout
	if timeout <= 0 {
		timeout = DefaultExecInitTimeout
	}
	return context.WithTimeout(ctx, timeout)
}

// InitFile is [Exec.InitContext] for a caller that sends the initial
// weights on from a file: the weights the process writes are checked as
// InitContext checks them and written to out, created or truncated, as
// InitContext's result encodes (model.EncodeSafetensors, no metadata), a
// chunk at a time.
func (e *Exec) InitFile(ctx context.Context, seed int64, out string) error {
	ctx, cancel := e.initDeadline(ctx)
	defer cancel()
	_, _, _, err := e.run(ctx, execTask{Kind: "init", Seed: seed}, nil, &execFiles{out: out}, nil, nil)
	return err
}

// Train runs a "train" task: w and ds in, trained weights and metrics out.
func (e *Exec) Train(ctx context.Context, w *model.Weights, ds *data.Dataset, cfg TrainConfig) (*model.Weights, TrainResult, error) {
	if err := checkTrainConfig(cfg); err != nil {
		return nil, TrainResult{}, err
	}
	if w == nil {
		return nil, TrainResult{}, fmt.Errorf("%w: no weights to train", ErrConfig)
	}
	out, m, p, err := e.run(ctx, trainTask(cfg), w, nil, ds, cfg.Progress)
	if err != nil {
		return nil, TrainResult{}, err
	}
	return out, trainResult(cfg, m, p), nil
}

// TrainFile is [Exec.Train] for a model in a file rather than in memory,
// for a caller that streams the model there as it downloads it: the
// process reads in, which holds the model as Train writes the weights it
// is given (model.EncodeSafetensors, no metadata), and shell gives its
// tensors' names and shapes (Data unused). The weights the process writes
// are checked as Train checks them and written to out, created or
// truncated, as Train's result encodes (model.EncodeSafetensors, no
// metadata, in shell's order), a chunk at a time: neither the caller nor
// the trainer holds a model.
func (e *Exec) TrainFile(ctx context.Context, in string, shell *model.Weights, ds *data.Dataset, cfg TrainConfig, out string) (TrainResult, error) {
	if err := checkTrainConfig(cfg); err != nil {
		return TrainResult{}, err
	}
	_, m, p, err := e.run(ctx, trainTask(cfg), nil, &execFiles{in: in, shell: shell, out: out}, ds, cfg.Progress)
	if err != nil {
		return TrainResult{}, err
	}
	return trainResult(cfg, m, p), nil
}

// FileDir returns the folder the trainer exchanges files with its process
// in (Config.WorkDir, else a temporary folder made on first use, on tmpfs
// for a persistent worker where /dev/shm is writable): where a caller of
// [Exec.TrainFile] puts the model's files, so that they go where the
// trainer's own would.
func (e *Exec) FileDir() (string, error) { return e.workRoot() }

// trainTask is the task file of a "train" task.
func trainTask(cfg TrainConfig) execTask {
	return execTask{
		Kind: "train", Seed: cfg.Seed, Epochs: cfg.Epochs, BatchSize: cfg.BatchSize, LR: cfg.LR,
		Momentum: cfg.Momentum, WeightDecay: cfg.WeightDecay, Mu: cfg.Mu,
	}
}

// trainResult is what a "train" task reports.
func trainResult(cfg TrainConfig, m execMetrics, p execProc) TrainResult {
	return TrainResult{
		NumSamples: m.numSamples, Loss: m.trainLoss, Epochs: cfg.Epochs, Seconds: p.seconds,
		Steps: int(m.steps), CPUSeconds: p.cpuSeconds, Metrics: m.extra,
	}
}

// Evaluate runs an "evaluate" task and returns the loss and accuracy the
// command reported.
func (e *Exec) Evaluate(ctx context.Context, w *model.Weights, ds *data.Dataset) (EvalResult, error) {
	if w == nil {
		return EvalResult{}, fmt.Errorf("%w: no weights to evaluate", ErrConfig)
	}
	return e.evaluate(ctx, w, nil, ds)
}

// EvaluateFile is [Exec.Evaluate] for a model in a file, in, as
// [Exec.TrainFile] takes it.
func (e *Exec) EvaluateFile(ctx context.Context, in string, ds *data.Dataset) (EvalResult, error) {
	return e.evaluate(ctx, nil, &execFiles{in: in}, ds)
}

func (e *Exec) evaluate(ctx context.Context, w *model.Weights, files *execFiles, ds *data.Dataset) (EvalResult, error) {
	_, m, p, err := e.run(ctx, execTask{Kind: "evaluate", BatchSize: execEvalBatch}, w, files, ds, nil)
	if err != nil {
		return EvalResult{}, err
	}
	return EvalResult{NumSamples: m.numSamples, Loss: m.loss, Accuracy: m.accuracy, Seconds: p.seconds, CPUSeconds: p.cpuSeconds, Metrics: m.extra}, nil
}

// execTask is the task file, documented in docs/trainer-protocol.md.
type execTask struct {
	Version     int       `json:"version"`
	Kind        string    `json:"kind"`
	Seed        int64     `json:"seed"`
	Epochs      int       `json:"epochs"`
	BatchSize   int       `json:"batch_size"`
	LR          float64   `json:"lr"`
	Momentum    float64   `json:"momentum"`
	WeightDecay float64   `json:"weight_decay"`
	Mu          float64   `json:"mu"`
	InputShape  []int     `json:"input_shape"`
	Classes     int       `json:"classes"`
	WeightsIn   string    `json:"weights_in"`
	WeightsOut  string    `json:"weights_out"`
	Data        execPaths `json:"data"`
	MetricsOut  string    `json:"metrics_out"`
	ScratchDir  string    `json:"scratch_dir"`
	Deadline    float64   `json:"deadline"`
}

type execPaths struct {
	Train string `json:"train,omitempty"`
	Test  string `json:"test,omitempty"`
}

// execMetrics is the metrics file, checked.
type execMetrics struct {
	numSamples int64
	trainLoss  float64
	loss       float64
	accuracy   float64
	steps      float64
	extra      map[string]float64
}

// execProc is what a finished process leaves besides its files.
type execProc struct {
	seconds, cpuSeconds float64
}

// execFiles are the model files of a task whose caller holds the model in
// a file, not in memory ([Exec.TrainFile]).
type execFiles struct {
	in    string         // the model, as the process reads it; "" for init
	shell *model.Weights // its tensors' names and shapes; nil for init
	out   string         // where the checked weights go; "" for evaluate
}

// run is one call: write the inputs, run the command, read and check the
// outputs. The model is w, or the file files names, which then takes the
// process's weights.
func (e *Exec) run(ctx context.Context, t execTask, w *model.Weights, files *execFiles, ds *data.Dataset, progress func(epoch, batch, batches int, loss float64)) (*model.Weights, execMetrics, execProc, error) {
	var none execMetrics
	if err := ctx.Err(); err != nil {
		return nil, none, execProc{}, fmt.Errorf("exec trainer %s: %w", t.Kind, err)
	}
	root, err := e.workRoot()
	if err != nil {
		return nil, none, execProc{}, err
	}
	callDir, err := os.MkdirTemp(root, t.Kind+"-*")
	if err != nil {
		return nil, none, execProc{}, fmt.Errorf("exec trainer: making the task folder: %w", err)
	}
	defer os.RemoveAll(callDir)

	t.Version = ExecProtocolVersion
	t.InputShape = e.inputShape
	t.Classes = e.classes
	t.MetricsOut = filepath.Join(callDir, "metrics.json")
	t.ScratchDir = callDir
	if d, ok := ctx.Deadline(); ok {
		t.Deadline = float64(d.UnixMilli()) / 1000
	}
	if files != nil {
		t.WeightsIn = files.in
	} else if w != nil {
		t.WeightsIn = filepath.Join(callDir, "weights_in.safetensors")
		if err := model.WriteSafetensorsFile(t.WeightsIn, w, nil); err != nil {
			return nil, none, execProc{}, fmt.Errorf("exec trainer: writing the input weights: %w", err)
		}
	}
	if t.Kind != "evaluate" {
		t.WeightsOut = filepath.Join(callDir, "weights_out.safetensors")
	}
	if t.Kind != "init" {
		path, release, err := e.dataset(ctx, ds)
		if err != nil {
			return nil, none, execProc{}, err
		}
		defer release()
		if t.Kind == "train" {
			t.Data.Train = path
		} else {
			t.Data.Test = path
		}
	}
	n := 0
	if ds != nil {
		n = ds.N
	}
	var out *model.Weights
	var m execMetrics
	// read reads and checks the outputs; tail ends its error.
	read := func(what, tail string) error {
		fail := func(err error) error {
			return fmt.Errorf("%w: %s: %w%s", ErrTrainerOutput, what, err, tail)
		}
		var err error
		if m, err = readExecMetrics(t.MetricsOut, t.Kind, n); err != nil {
			return fail(err)
		}
		if t.WeightsOut == "" {
			return nil
		}
		if files != nil {
			if err := reencodeExecWeights(t.WeightsOut, files.shell, files.out); err != nil {
				return fail(err)
			}
			return nil
		}
		if out, err = readExecWeights(t.WeightsOut, w); err != nil {
			return fail(err)
		}
		return nil
	}
	if e.persistent {
		t.Version = ExecPersistentProtocol
		p, err := e.serve(ctx, t, progress, read)
		if err != nil {
			return nil, none, p, err
		}
		return out, m, p, nil
	}
	taskPath := filepath.Join(callDir, "task.json")
	tb, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return nil, none, execProc{}, fmt.Errorf("exec trainer: encoding the task: %w", err)
	}
	if err := os.WriteFile(taskPath, tb, 0o600); err != nil {
		return nil, none, execProc{}, fmt.Errorf("exec trainer: writing the task file: %w", err)
	}
	p, tail, err := e.execute(ctx, t.Kind, taskPath, progress)
	if err != nil {
		return nil, none, p, err
	}
	if err := read(e.what(t.Kind), tail); err != nil {
		return nil, none, p, err
	}
	return out, m, p, nil
}

// what names the command in errors.
func (e *Exec) what(kind string) string {
	c := strings.Join(e.command, " ")
	if len(c) > execMaxCommand {
		c = c[:execMaxCommand] + "…"
	}
	return fmt.Sprintf("trainer %q (%s task)", c, kind)
}

// workRoot returns the work dir, making it on first use.
func (e *Exec) workRoot() (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.scratch != "" {
		return e.scratch, nil
	}
	if e.workDir != "" {
		if err := os.MkdirAll(e.workDir, 0o700); err != nil {
			return "", fmt.Errorf("exec trainer: making the work directory: %w", err)
		}
		e.scratch = e.workDir
		return e.scratch, nil
	}
	tmp := ""
	if e.persistent && writable("/dev/shm") {
		tmp = "/dev/shm" // tmpfs: the files of a task never touch a disk
	}
	d, err := os.MkdirTemp(tmp, "cohort-exec-*")
	if err != nil {
		return "", fmt.Errorf("exec trainer: making a temporary work directory (set TMPDIR to a writable folder): %w", err)
	}
	e.scratch, e.ownDir = d, true
	return d, nil
}

// dataset returns the path of ds's safetensors file, writing it unless a
// call already did; release must be called once the process is done.
func (e *Exec) dataset(ctx context.Context, ds *data.Dataset) (string, func(), error) {
	if ds == nil || ds.N <= 0 {
		return "", nil, fmt.Errorf("%w: the dataset is empty", ErrConfig)
	}
	shape := ds.Shape
	if len(shape) == 0 {
		shape = []int{ds.Features}
	}
	if len(ds.X) != ds.N*ds.Features || len(ds.Y) != ds.N || prod(shape) != ds.Features {
		return "", nil, fmt.Errorf("%w: dataset %q is inconsistent: %d samples of %d features (shape %v), %d values, %d labels",
			ErrConfig, ds.Name, ds.N, ds.Features, shape, len(ds.X), len(ds.Y))
	}
	if !slices.Equal(shape, e.inputShape) {
		return "", nil, fmt.Errorf("%w: dataset %q holds samples of shape %v, the model takes %v", ErrConfig, ds.Name, shape, e.inputShape)
	}
	key := e.datasetKey(ds, shape)
	root, err := e.workRoot()
	if err != nil {
		return "", nil, err
	}
	e.mu.Lock()
	f, ok := e.files[key]
	if !ok {
		f = &dataFile{path: filepath.Join(root, "data-"+key+".safetensors"), ready: make(chan struct{})}
		e.files[key] = f
	}
	f.refs++
	e.mu.Unlock()
	release := func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		f.refs--
		e.tick++
		f.used = e.tick
		e.evictLocked()
	}
	if !ok {
		f.err = writeDataset(f.path, ds, shape)
		if f.err != nil {
			e.mu.Lock()
			if e.files[key] == f {
				delete(e.files, key)
			}
			e.mu.Unlock()
		}
		close(f.ready)
	}
	select {
	case <-f.ready:
	case <-ctx.Done():
		release()
		return "", nil, fmt.Errorf("exec trainer: waiting for the dataset file: %w", ctx.Err())
	}
	if f.err != nil {
		release()
		return "", nil, f.err
	}
	return f.path, release, nil
}

// evictLocked removes the least recently used dataset files no call uses
// beyond the execDataFiles most recent. e.mu must be held.
func (e *Exec) evictLocked() {
	var idle []string
	for k, f := range e.files {
		if f.refs == 0 {
			idle = append(idle, k)
		}
	}
	if len(idle) <= execDataFiles {
		return
	}
	sort.Slice(idle, func(i, j int) bool { return e.files[idle[i]].used < e.files[idle[j]].used })
	for _, k := range idle[:len(idle)-execDataFiles] {
		f := e.files[k]
		if err := os.Remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			e.log.Warn("exec_data_remove_failed", "path", f.path, "err", err)
		}
		delete(e.files, k)
	}
}

// datasetKey names ds's content: its digest (memoised per dataset object
// through a weak pointer, so a collected dataset's address cannot alias)
// and its sample shape.
func (e *Exec) datasetKey(ds *data.Dataset, shape []int) string {
	wp := weak.Make(ds)
	e.mu.Lock()
	m, ok := e.digests[wp]
	e.mu.Unlock()
	if ok && m.n == ds.N {
		return m.key
	}
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = strconv.Itoa(d)
	}
	key := ds.Digest()[:32] + "-" + strings.Join(dims, "x")
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.digests) >= 64 {
		for k := range e.digests {
			if k.Value() == nil {
				delete(e.digests, k)
			}
		}
	}
	e.digests[wp] = digestMemo{key: key, n: ds.N}
	return key
}

// writeDataset writes ds as safetensors: x [N, shape...] and y [N], both
// F32, y holding class indices.
func writeDataset(path string, ds *data.Dataset, shape []int) error {
	y := make([]float32, ds.N)
	for i, l := range ds.Y {
		y[i] = float32(l)
	}
	w := &model.Weights{Tensors: []model.Tensor{
		{Name: "x", Shape: append([]int{ds.N}, shape...), Data: ds.X},
		{Name: "y", Shape: []int{ds.N}, Data: y},
	}}
	if err := model.WriteSafetensorsFile(path, w, nil); err != nil {
		return fmt.Errorf("exec trainer: writing dataset %q: %w", ds.Name, err)
	}
	return nil
}

// writable reports whether dir is a folder this process can write into.
func writable(dir string) bool {
	st, err := os.Stat(dir)
	return err == nil && st.IsDir() && syscall.Access(dir, 2 /* W_OK */) == nil
}

func prod(s []int) int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}

// execute runs the command for the task file and waits for it and its
// process group; the error, if any, ends with the tail of stderr, which
// tail holds (as an error-message suffix) for errors found later.
func (e *Exec) execute(ctx context.Context, kind, taskPath string, progress func(epoch, batch, batches int, loss float64)) (execProc, string, error) {
	grace := e.Grace
	if grace <= 0 {
		grace = DefaultExecGrace
	}
	cmd := exec.Command(e.command[0], e.command[1:]...)
	cmd.Dir = e.dir
	env := os.Environ()
	if _, ok := os.LookupEnv("PYTHONUNBUFFERED"); !ok {
		env = append(env, "PYTHONUNBUFFERED=1") // lines reach the log as printed
	}
	env = append(env, e.env...)
	cmd.Env = append(env, "COHORT_TASK="+taskPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = grace // a process outside the group holding the pipes

	log := e.log.With("kind", kind)
	stderrTail := &tailLines{max: execTailLines}
	stdout, stderr := e.outputWriters(log, stderrTail.add, progress)
	cmd.Stdout, cmd.Stderr = stdout, stderr

	start := time.Now()
	if err := cmd.Start(); err != nil {
		return execProc{}, "", e.startError(kind, err)
	}
	pid := cmd.Process.Pid
	log.Debug("trainer_started", "pid", pid, "command", e.command, "dir", e.dir, "task", taskPath)
	TaskFrom(ctx).started(pid)

	const (
		running = iota
		termSent
		killSent
	)
	var stopped atomic.Int32
	exited := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-exited:
			return
		case <-ctx.Done():
		}
		stopped.Store(termSent)
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-exited:
		case <-t.C:
			stopped.Store(killSent)
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}()
	// Once the leader has exited (not yet reaped, so its pid and group id
	// cannot be reused), the rest of its group goes with it; then reap.
	// The watcher stops signalling before the leader is reaped.
	waited := waitExited(pid)
	if waited {
		close(exited)
		<-watched
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	waitErr := cmd.Wait()
	if !waited {
		close(exited)
		<-watched
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	stdout.flush()
	stderr.flush()

	p := execProc{seconds: time.Since(start).Seconds()}
	if ps := cmd.ProcessState; ps != nil {
		p.cpuSeconds = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	tail := stderrTail.suffix()
	log.Debug("trainer_exited", "pid", pid, "seconds", p.seconds, "cpu_seconds", p.cpuSeconds, "err", waitErr)

	if s := stopped.Load(); s != running {
		how := "sent SIGTERM"
		if s == killSent {
			how = fmt.Sprintf("sent SIGTERM, then SIGKILL after %v", grace)
		}
		why := "was cancelled"
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			why = "ran past its deadline"
		}
		return p, tail, fmt.Errorf("%s %s after %.1fs (%s)%s: %w", e.what(kind), why, p.seconds, how, tail, ctx.Err())
	}
	var ee *exec.ExitError
	switch {
	case errors.As(waitErr, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			hint := ""
			if ws.Signal() == syscall.SIGKILL {
				hint = " (nothing in Cohort sent it: the kernel's out-of-memory killer does, for one)"
			}
			return p, tail, fmt.Errorf("%w: %s was killed by signal %s after %.1fs%s%s", ErrTrainerFailed, e.what(kind), ws.Signal(), p.seconds, hint, tail)
		}
		return p, tail, fmt.Errorf("%w: %s exited with code %d after %.1fs%s%s", ErrTrainerFailed, e.what(kind), ee.ExitCode(), p.seconds, reportedError(taskPath), tail)
	case errors.Is(waitErr, exec.ErrWaitDelay):
		// It exited 0, but something that left its group kept stdout or
		// stderr open; the outputs decide.
		log.Warn("trainer_pipes_held", "err", waitErr)
	case waitErr != nil:
		return p, tail, fmt.Errorf("%w: %s: waiting for it: %v%s", ErrTrainerFailed, e.what(kind), waitErr, tail)
	}
	return p, tail, nil
}

// startError explains why the command did not start.
func (e *Exec) startError(kind string, err error) error {
	prog := e.command[0]
	switch {
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: starting %s: %q not found (%v); install it or put its full path first in model.command (relative paths start from %s)",
			ErrCommandNotFound, e.what(kind), prog, err, e.workingDir())
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: starting %s: %v; chmod +x %s or run it through its interpreter, e.g. [python3, %s]", ErrCommandNotFound, e.what(kind), err, prog, prog)
	case errors.Is(err, syscall.ENOEXEC):
		return fmt.Errorf("%w: starting %s: %v; a script needs a #! line, or run it through its interpreter", ErrCommandNotFound, e.what(kind), err)
	}
	return fmt.Errorf("%w: starting %s: %v", ErrTrainerFailed, e.what(kind), err)
}

// reportedError returns the "error" a failed process wrote into its
// metrics file, as an error-message fragment, or "".
func reportedError(taskPath string) string {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(taskPath), "metrics.json"))
	if err != nil || len(b) > 1<<20 {
		return ""
	}
	var m struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &m) != nil || m.Error == "" {
		return ""
	}
	if len(m.Error) > execMaxLine {
		m.Error = m.Error[:execMaxLine] + "…"
	}
	return ": " + m.Error
}

// readExecMetrics reads and checks the metrics file of a task on n
// samples; an init task need not write one.
func readExecMetrics(path, kind string, n int) (execMetrics, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		if kind == "init" {
			return execMetrics{numSamples: int64(n)}, nil
		}
		return execMetrics{}, fmt.Errorf("it reported success (exit 0, or ok: true) but wrote no metrics to %s (the task's metrics_out)", path)
	}
	if err != nil {
		return execMetrics{}, fmt.Errorf("reading the metrics: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, execMaxMetrics+1))
	if err != nil {
		return execMetrics{}, fmt.Errorf("reading the metrics: %w", err)
	}
	if len(b) > execMaxMetrics {
		return execMetrics{}, fmt.Errorf("the metrics file %s is over %d bytes; write a flat JSON object of numbers", path, execMaxMetrics)
	}
	return parseExecMetrics(b, kind, n)
}

// parseExecMetrics decodes and checks a metrics file: the keys a task of
// this kind must report, and extra numeric keys (others are ignored).
func parseExecMetrics(b []byte, kind string, n int) (execMetrics, error) {
	m := execMetrics{numSamples: int64(n)}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil || raw == nil {
		if bytes.Contains(b, []byte("NaN")) || bytes.Contains(b, []byte("Infinity")) {
			return m, errors.New("the metrics hold NaN or Infinity, which JSON cannot (Python's json writes them for non-finite floats): training diverged? lower train.lr")
		}
		if err == nil {
			err = errors.New("null")
		}
		return m, fmt.Errorf("the metrics are not a JSON object: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return m, errors.New("the metrics have more after the object; write one JSON object")
	}
	num := func(key string) (float64, bool, error) {
		v, ok := raw[key]
		if !ok || string(v) == "null" {
			return 0, false, nil
		}
		var x float64
		if err := json.Unmarshal(v, &x); err != nil {
			return 0, false, fmt.Errorf("metrics key %q holds %s; want a number", key, v)
		}
		return x, true, nil
	}
	var problems []error
	need := func(key string, dst *float64) {
		x, ok, err := num(key)
		switch {
		case err != nil:
			problems = append(problems, err)
		case !ok:
			problems = append(problems, fmt.Errorf("metrics key %q is missing; a %s task must report it", key, kind))
		case math.IsNaN(x) || math.IsInf(x, 0):
			problems = append(problems, fmt.Errorf("metrics key %q is %v", key, x))
		default:
			*dst = x
		}
	}
	switch kind {
	case "train":
		need("train_loss", &m.trainLoss)
	case "evaluate":
		need("loss", &m.loss)
		need("accuracy", &m.accuracy)
		if !(m.accuracy >= 0 && m.accuracy <= 1) {
			problems = append(problems, fmt.Errorf("metrics key \"accuracy\" is %v; want a fraction in [0, 1]", m.accuracy))
		}
	}
	if x, ok, err := num("num_samples"); err != nil {
		problems = append(problems, err)
	} else if ok {
		if x < 1 || x != math.Trunc(x) || x > math.MaxInt64/2 {
			problems = append(problems, fmt.Errorf("metrics key \"num_samples\" is %v; want a positive whole number", x))
		} else {
			m.numSamples = int64(x)
		}
	}
	if x, ok, err := num("steps"); err == nil && ok && x >= 0 && x <= math.MaxInt32 {
		m.steps = math.Trunc(x)
	}
	for k := range raw {
		switch k {
		case "num_samples", "train_loss", "loss", "accuracy", "steps", "error":
			continue
		}
		if x, ok, err := num(k); err == nil && ok && !math.IsNaN(x) && !math.IsInf(x, 0) {
			if m.extra == nil {
				m.extra = make(map[string]float64)
			}
			m.extra[k] = x
		}
	}
	if err := errors.Join(problems...); err != nil {
		return m, err
	}
	return m, nil
}

// readExecWeights reads the weights a process wrote and checks them
// against its input (nil for init): the same names and shapes, returned in
// the input's order, and finite values.
func readExecWeights(path string, in *model.Weights) (*model.Weights, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("it reported success (exit 0, or ok: true) but wrote no weights to %s (the task's weights_out)", path)
	}
	out, _, err := model.ReadSafetensorsFile(path)
	if err != nil {
		return nil, err
	}
	if len(out.Tensors) == 0 {
		return nil, fmt.Errorf("the weights in %s hold no tensors", path)
	}
	if in != nil {
		if out, err = inOrderOf(out, in); err != nil {
			return nil, err
		}
		if err := in.Compatible(out); err != nil {
			return nil, fmt.Errorf("the weights do not match the model it was given: %w", err)
		}
	}
	if err := out.CheckFinite(); err != nil {
		return nil, fmt.Errorf("the weights are not all finite (training diverged? lower train.lr): %w", err)
	}
	return out, nil
}

// reencodeExecWeights checks the weights a process wrote to path against
// the model it was given (shell; nil for init), as readExecWeights does,
// and writes them to dst as model.EncodeSafetensors would, in shell's
// order (for init, the file's), a chunk at a time.
func reencodeExecWeights(path string, shell *model.Weights, dst string) (err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("it reported success (exit 0, or ok: true) but wrote no weights to %s (the task's weights_out)", path)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("writing the checked weights for the site: %w", err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("writing the checked weights for the site: %w", cerr)
		}
	}()
	bw := bufio.NewWriterSize(out, 1<<20)
	var names *model.Weights // the tensors, for errors
	finite := func(t, off int, vals []float32) error {
		if _, finite := model.FiniteNorm(vals); !finite {
			return fmt.Errorf("the weights are not all finite (training diverged? lower train.lr): %w: tensor %q, from value %d", model.ErrNotFinite, names.Tensors[t].Name, off)
		}
		return nil
	}
	if shell != nil {
		names = shell
		_, err = model.ReencodeSafetensors(bw, f, st.Size(), shell, finite)
	} else {
		_, err = model.TransformSafetensors(bw, f, st.Size(), func(w *model.Weights) error {
			if len(w.Tensors) == 0 {
				return fmt.Errorf("the weights in %s hold no tensors", path)
			}
			names = w
			return nil
		}, finite)
	}
	if errors.Is(err, model.ErrIncompatible) {
		return fmt.Errorf("the weights do not match the model it was given: %w", err)
	}
	if err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing the checked weights for the site: %w", err)
	}
	return nil
}

// inOrderOf returns out's tensors in ref's order (safetensors writers may
// sort them by name), or an error naming a missing or unexpected tensor.
func inOrderOf(out, ref *model.Weights) (*model.Weights, error) {
	byName := make(map[string]int, len(out.Tensors))
	for i, t := range out.Tensors {
		byName[t.Name] = i
	}
	sorted := &model.Weights{Tensors: make([]model.Tensor, 0, len(out.Tensors))}
	for _, t := range ref.Tensors {
		i, ok := byName[t.Name]
		if !ok {
			return nil, fmt.Errorf("%w: the weights lack tensor %q (shape %v) of the model it was given", model.ErrIncompatible, t.Name, t.Shape)
		}
		sorted.Tensors = append(sorted.Tensors, out.Tensors[i])
		delete(byName, t.Name)
	}
	for name := range byName {
		return nil, fmt.Errorf("%w: the weights hold tensor %q, which the model it was given has not", model.ErrIncompatible, name)
	}
	return sorted, nil
}

// lineWriter splits a stream into lines of at most execMaxLine bytes (the
// rest of a longer line is dropped) and hands each to emit: memory stays
// bounded whatever the process prints.
type lineWriter struct {
	buf  []byte
	cut  bool
	emit func(line string, cut bool)
}

func newLineWriter(emit func(string, bool)) *lineWriter {
	return &lineWriter{buf: make([]byte, 0, execMaxLine), emit: emit}
}

// Write never fails, so that the process is never blocked on its output.
func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		room := execMaxLine - len(w.buf)
		if len(chunk) > room {
			chunk, w.cut = chunk[:room], true
		}
		w.buf = append(w.buf, chunk...)
		if i < 0 {
			break
		}
		w.line()
		p = p[i+1:]
	}
	return n, nil
}

// flush emits the last line if it had no newline.
func (w *lineWriter) flush() {
	if len(w.buf) > 0 || w.cut {
		w.line()
	}
}

// line emits the pending line.
func (w *lineWriter) line() {
	line := string(bytes.TrimSuffix(w.buf, []byte("\r")))
	cut := w.cut
	w.buf, w.cut = w.buf[:0], false
	w.emit(line, cut)
}

// tailLines keeps the last max lines.
type tailLines struct {
	max   int
	lines []string
	next  int
}

func (t *tailLines) add(s string) {
	if len(t.lines) < t.max {
		t.lines = append(t.lines, s)
		return
	}
	t.lines[t.next] = s
	t.next = (t.next + 1) % t.max
}

// last returns the kept lines, oldest first.
func (t *tailLines) last() []string {
	return append(slices.Clone(t.lines[t.next:]), t.lines[:t.next]...)
}

// suffix is the tail as the end of an error message: whole lines from
// the end, at most execTailBytes of them.
func (t *tailLines) suffix() string {
	lines := t.last()
	if len(lines) == 0 {
		return "; it wrote nothing to stderr"
	}
	size, from := 0, len(lines)
	for from > 0 && size+len(lines[from-1]) <= execTailBytes {
		from--
		size += len(lines[from])
	}
	var b strings.Builder
	fmt.Fprintf(&b, "; stderr ended with:")
	for _, l := range lines[from:] {
		b.WriteString("\n  | ")
		b.WriteString(l)
	}
	return b.String()
}
