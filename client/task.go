package client

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/cohortfl/cohort/aggregators"
	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/internal/bulk"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/train"
)

// Meter measures the energy of a site's work: Start begins a measurement
// with the task's energy settings.
type Meter interface {
	Start(ctx context.Context, t *pb.Task) (Measurement, error)
}

// Measurement is one running measurement of a site's work.
type Measurement interface {
	// Track counts process pid and its children as the measured work (a
	// trainer's process), so that a device shared with other tasks is
	// attributed by what each task's processes did on it.
	Track(pid int)
	// AddCPUTime adds the CPU seconds of work done outside the site's
	// process (an external trainer's) to the measurement's estimate.
	AddCPUTime(seconds float64)
	// Stop ends the measurement and returns its report for the wire.
	Stop() *pb.EnergyReport
}

// taskEnergy is what a task spent, for the failure message when it does
// not complete: the coordinator counts it as wasted work.
type taskEnergy struct {
	report *pb.EnergyReport
}

func (a *Agent) runTask(ctx context.Context, cli pb.CoordinatorServiceClient, s *session, t *pb.Task, spent *taskEnergy, log *slog.Logger) error {
	switch t.GetKind() {
	case pb.TaskKind_TASK_KIND_TRAIN, pb.TaskKind_TASK_KIND_CENTRALIZED_TRAIN:
	case pb.TaskKind_TASK_KIND_INIT:
		return a.initTask(ctx, cli, t, spent, log)
	case pb.TaskKind_TASK_KIND_EVALUATE:
		return a.evaluateTask(ctx, cli, s, t, spent, log)
	default:
		return fmt.Errorf("task kind %s is not supported by this site (version %s)", t.GetKind(), a.cfg.Version)
	}
	arrived := time.Now()
	trainSet, testSet, err := a.load(ctx, t)
	if err != nil {
		return fmt.Errorf("loading dataset %q: %w", t.GetDataset(), err)
	}
	tr, err := a.trainers.Trainer(trainConfig(t.GetModel()))
	if err != nil {
		return fmt.Errorf("building trainer: %w", err)
	}
	a.retire(tr, t)
	// A stream trainer's update is made as the model arrives (stream.go);
	// a file trainer gets the model in a file, written as it arrives, and
	// leaves the update in one (files.go); virtual clients each train from
	// the same global model, held, as the built-in trainers train.
	st, stream := tr.(streamTrainer)
	stream = stream && t.GetVirtual() == nil
	ft, file := tr.(fileTrainer)
	file = file && !stream && t.GetVirtual() == nil
	var global *model.Weights // in memory: neither stream nor file
	var files *modelFiles
	switch {
	case stream: // a stream trainer evaluates no model
	case file:
		root, err := ft.FileDir()
		if err != nil {
			return err
		}
		if files, err = fetchModelFile(ctx, cli, t, root); err != nil {
			return err
		}
		defer files.remove()
	default:
		if global, err = fetchModel(ctx, cli, t); err != nil {
			return err
		}
	}
	// Evaluating the received model and training are measured apart, so
	// that the arm's evaluation energy is told from its training's.
	metrics := make(map[string]float64)
	var evalReport *pb.EnergyReport
	var trainerSeconds float64
	if t.GetEvaluateGlobal() && testSet != nil && testSet.N > 0 {
		m := a.startMeter(ctx, t, log)
		var ev train.EvalResult
		if files != nil {
			ev, err = ft.EvaluateFile(a.trainerContext(ctx, t, m), files.global, testSet)
		} else {
			ev, err = tr.Evaluate(a.trainerContext(ctx, t, m), global, testSet)
		}
		m.addCPU(ev.CPUSeconds)
		evalReport = m.stop()
		spent.report = evalReport
		if err != nil {
			return fmt.Errorf("evaluating the global model: %w", err)
		}
		metrics["eval_loss"] = ev.Loss
		metrics["eval_accuracy"] = ev.Accuracy
		metrics["eval_samples"] = float64(ev.NumSamples)
		trainerSeconds += positiveOr(ev.Metrics[metricTrainerSeconds], ev.Seconds)
	}
	if stream {
		return a.streamTask(ctx, cli, t, st, trainSet, a.taskTrainConfig(s, t), arrived, metrics, evalReport, trainerSeconds, spent, log)
	}
	m := a.startMeter(ctx, t, log)
	defer m.stop()
	cfg := a.taskTrainConfig(s, t)
	var updated *model.Weights
	var res train.TrainResult
	switch vc := t.GetVirtual(); {
	case vc != nil: // a worker of virtual clients (virtual.go)
		updated, res, err = trainVirtual(a.trainerContext(ctx, t, m), tr, global, trainSet, cfg, vc, func(done, total int, loss float64) {
			cfg.Progress(1, done, total, loss)
		})
	case files != nil: // the update checked as the trainer writes it
		res, err = ft.TrainFile(a.trainerContext(ctx, t, m), files.global, files.shell, trainSet, cfg, files.update)
	default:
		updated, res, err = tr.Train(a.trainerContext(ctx, t, m), global, trainSet, cfg)
	}
	m.addCPU(res.CPUSeconds)
	report := m.stop()
	if report != nil {
		spent.report = report
	}
	if err != nil {
		return fmt.Errorf("training: %w", err)
	}
	addTrainMetrics(metrics, res)
	if updated != nil {
		if err := updated.CheckFinite(); err != nil {
			return fmt.Errorf("training produced non-finite weights (lower the learning rate): %w", err)
		}
	}
	// The trainer's own time (an exec trainer reports it; a built-in one
	// trains in-process) against the site's wall time for the task: what
	// start-up, data handling and the weights' trips cost.
	trainerSeconds += positiveOr(res.Metrics[metricTrainerSeconds], res.Seconds)
	metrics[metricTrainerSeconds] = trainerSeconds
	metrics[metricTaskSeconds] = time.Since(arrived).Seconds()
	log.Debug("task_trained", "loss", res.Loss, "seconds", res.Seconds)
	ds := &pb.DatasetInfo{Name: t.GetDataset() + "/" + trainSet.Name, Sha256: a.digest(trainSet), NumSamples: int64(trainSet.N)}
	if files != nil {
		return pushUpdateFile(ctx, cli, t, files.update, res.NumSamples, metrics, report, evalReport, ds)
	}
	return pushUpdate(ctx, cli, t, updated, res.NumSamples, metrics, report, evalReport, ds)
}

// addTrainMetrics adds what training reported to the update's metrics.
func addTrainMetrics(metrics map[string]float64, res train.TrainResult) {
	metrics["train_loss"] = res.Loss
	metrics["train_seconds"] = res.Seconds
	metrics["num_samples"] = float64(res.NumSamples)
	metrics["train_steps"] = float64(res.Steps)
	if res.CPUSeconds > 0 {
		metrics["train_cpu_seconds"] = res.CPUSeconds
	}
	for k, v := range res.Metrics { // an external trainer's extras
		if _, taken := metrics[k]; !taken {
			metrics[k] = v
		}
	}
}

// taskTrainConfig is what task t has this site train with: the job's
// settings and the strategy's, and progress sent on s at most every
// ProgressInterval, or the session's heartbeat interval where that is
// not set.
func (a *Agent) taskTrainConfig(s *session, t *pb.Task) train.TrainConfig {
	p := t.GetTrain()
	cs := aggregators.ReadClientSettings(p) // what the job's strategy has this site train with
	every := cmp.Or(a.cfg.ProgressInterval, s.heartbeat(), 5*time.Second)
	// The first report comes an interval into the task, not at its first
	// batch: a task shorter than that sends none (at 10,000 sites, a
	// message each way per site and round that said nothing).
	lastProgress := s.clock()
	return train.TrainConfig{
		Epochs:      int(p.GetEpochs()),
		BatchSize:   int(p.GetBatchSize()),
		LR:          p.GetLr(),
		Momentum:    p.GetMomentum(),
		WeightDecay: p.GetWeightDecay(),
		Mu:          cs.Mu,
		Seed:        p.GetSeed(),
		Progress: func(epoch, batch, batches int, loss float64) {
			now := s.clock()
			if now.Sub(lastProgress) < every {
				return
			}
			lastProgress = now
			_ = s.send(&pb.SiteMessage{Msg: &pb.SiteMessage_Progress{Progress: &pb.TaskProgress{
				TaskId: t.GetTaskId(), Epoch: int32(epoch), Batch: int32(batch), Batches: int32(batches), Loss: loss,
			}}})
		},
	}
}

// Metric names the site reports with an update (tracking's
// MetricTaskSeconds and MetricTrainerSeconds; client does not import
// tracking).
const (
	metricTaskSeconds    = "task_seconds"
	metricTrainerSeconds = "trainer_seconds"
)

// positiveOr returns v, or or where v is not positive (not reported).
func positiveOr(v, or float64) float64 {
	if v > 0 {
		return v
	}
	return or
}

// trainerContext tells the trainer which persistent worker serves the task
// (a persistent exec trainer runs this site's tasks of one job and arm in
// one process) and hands the process it runs in to the measurement.
func (a *Agent) trainerContext(ctx context.Context, t *pb.Task, m *meterRun) context.Context {
	return train.WithTask(ctx, train.TaskInfo{Worker: workerKey(a.cfg.Name, t), Started: m.track})
}

func workerKey(site string, t *pb.Task) string {
	return site + "/" + t.GetJobId() + "/" + t.GetArm()
}

// retire stops the persistent worker of the arm this site last trained for
// a job once a task of another arm of that job arrives: a job's arms run
// one after another, and the finished arm's process would otherwise hold
// its memory (on a GPU, its CUDA context) until its idle timeout.
func (a *Agent) retire(tr train.Trainer, t *pb.Task) {
	s, ok := tr.(interface{ StopWorker(key string) })
	if !ok || t.GetArm() == "" {
		return // an init or evaluate task has a worker of its own, for the job
	}
	key := workerKey(a.cfg.Name, t)
	a.mu.Lock()
	if a.workers == nil || len(a.workers) > 64 {
		a.workers = make(map[string]string) // jobs long gone; their workers idled out
	}
	prev := a.workers[t.GetJobId()]
	a.workers[t.GetJobId()] = key
	a.mu.Unlock()
	if prev != "" && prev != key {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			s.StopWorker(prev)
		}()
	}
}

// meterRun is one measurement of the agent's meter; its zero value (no
// meter) measures nothing.
type meterRun struct {
	m      Measurement
	report *pb.EnergyReport
	done   bool
}

// startMeter starts a measurement of the task's work.
func (a *Agent) startMeter(ctx context.Context, t *pb.Task, log *slog.Logger) *meterRun {
	r := &meterRun{}
	if a.meter != nil {
		m, err := a.meter.Start(ctx, t)
		if err != nil {
			log.Warn("energy_meter_failed", "err", err)
		} else {
			r.m = m
		}
	}
	return r
}

func (r *meterRun) track(pid int) {
	if r.m != nil {
		r.m.Track(pid)
	}
}

func (r *meterRun) addCPU(seconds float64) {
	if r.m != nil && seconds > 0 {
		r.m.AddCPUTime(seconds)
	}
}

// stop ends the measurement (once) and returns its report; nil without a
// meter.
func (r *meterRun) stop() *pb.EnergyReport {
	if r.m != nil && !r.done {
		r.done = true
		r.report = r.m.Stop()
	}
	return r.report
}

// initTask makes the job's initial weights with the site's trainer and
// uploads them as the task's update (with no samples).
func (a *Agent) initTask(ctx context.Context, cli pb.CoordinatorServiceClient, t *pb.Task, spent *taskEnergy, log *slog.Logger) error {
	tr, err := a.trainers.Trainer(trainConfig(t.GetModel()))
	if err != nil {
		return fmt.Errorf("building trainer: %w", err)
	}
	m := a.startMeter(ctx, t, log)
	defer m.stop()
	if fi, ok := tr.(fileIniter); ok {
		return a.initFile(ctx, cli, t, fi, m, spent, log)
	}
	var w *model.Weights
	if ic, ok := tr.(interface {
		InitContext(context.Context, int64) (*model.Weights, error)
	}); ok {
		w, err = ic.InitContext(a.trainerContext(ctx, t, m), t.GetTrain().GetSeed())
	} else {
		w, err = tr.Init(t.GetTrain().GetSeed())
	}
	report := m.stop()
	spent.report = report
	if err != nil {
		return fmt.Errorf("making the initial weights: %w", err)
	}
	if err := w.CheckFinite(); err != nil {
		return fmt.Errorf("the trainer's initial weights are not finite: %w", err)
	}
	log.Info("task_initialised", "tensors", len(w.Tensors))
	return pushUpdate(ctx, cli, t, w, 0, nil, report, nil, nil)
}

// evaluateTask evaluates the task's model on the site's test split and
// reports the result.
func (a *Agent) evaluateTask(ctx context.Context, cli pb.CoordinatorServiceClient, s *session, t *pb.Task, spent *taskEnergy, log *slog.Logger) error {
	global, err := fetchModel(ctx, cli, t)
	if err != nil {
		return err
	}
	_, testSet, err := a.load(ctx, t)
	if err != nil {
		return fmt.Errorf("loading dataset %q: %w", t.GetDataset(), err)
	}
	if testSet == nil || testSet.N == 0 {
		return fmt.Errorf("this site holds no test split of %q to evaluate on; give it the dataset's test files or evaluate elsewhere (eval.site)", t.GetDataset())
	}
	tr, err := a.trainers.Trainer(trainConfig(t.GetModel()))
	if err != nil {
		return fmt.Errorf("building trainer: %w", err)
	}
	m := a.startMeter(ctx, t, log)
	defer m.stop()
	ev, err := tr.Evaluate(a.trainerContext(ctx, t, m), global, testSet)
	m.addCPU(ev.CPUSeconds)
	report := m.stop()
	spent.report = report
	if err != nil {
		return fmt.Errorf("evaluating the global model: %w", err)
	}
	log.Info("task_evaluated", "accuracy", ev.Accuracy, "loss", ev.Loss, "samples", ev.NumSamples)
	return s.send(&pb.SiteMessage{Msg: &pb.SiteMessage_Result{Result: &pb.TaskResult{
		TaskId: t.GetTaskId(),
		Metrics: map[string]float64{
			"loss": ev.Loss, "accuracy": ev.Accuracy, "num_samples": float64(ev.NumSamples),
		},
		Energy: report,
	}}})
}

// digest returns the SHA-256 of a dataset the site trains on, computed once
// per dataset (the data source caches datasets, so tasks share them).
func (a *Agent) digest(d *data.Dataset) string {
	a.digestMu.Lock()
	defer a.digestMu.Unlock()
	if s, ok := a.digests[d]; ok {
		return s
	}
	s := d.Digest()
	if a.digests == nil {
		a.digests = make(map[*data.Dataset]string)
	}
	a.digests[d] = s
	return s
}

// fetchModel downloads and verifies the task's global model.
func fetchModel(ctx context.Context, cli pb.CoordinatorServiceClient, t *pb.Task) (*model.Weights, error) {
	// Decoded as the chunks arrive, straight into the tensors, and hashed
	// on the way; allocated as the header announces, within the size the
	// coordinator declared for the model the site asked for.
	r, total, sum, err := openModel(ctx, cli, t)
	if err != nil {
		return nil, err
	}
	w, _, err := model.DecodeSafetensors(r, total)
	if err != nil {
		return nil, fmt.Errorf("fetching and decoding the global model: %w", err)
	}
	if err := r.Finish(sum); err != nil {
		return nil, fmt.Errorf("fetching model: %w", err)
	}
	return w, nil
}

// openModel starts the download of the task's global model: it returns
// the reader of its bytes, their size and the SHA-256 the coordinator
// announced, for the reader's Finish to check. A small model came in the
// task (ModelData): it is read from there, and checked the same way.
func openModel(ctx context.Context, cli pb.CoordinatorServiceClient, t *pb.Task) (r *model.ChunkReader, total int64, sum []byte, err error) {
	if data := t.GetModelData(); len(data) > 0 {
		r, err = model.NewChunkReader(t.GetModelSize(), func() ([]byte, error) {
			b := data
			data = nil
			if b == nil {
				return nil, io.EOF
			}
			return b, nil
		})
		if err != nil {
			return nil, 0, nil, fmt.Errorf("reading the model sent in the task: %w", err)
		}
		return r, t.GetModelSize(), t.GetModelSha256(), nil
	}
	stream, err := cli.FetchModel(ctx, &pb.FetchModelRequest{ModelId: t.GetModelId(), TaskId: t.GetTaskId()})
	if err != nil {
		return nil, 0, nil, fmt.Errorf("fetching model: %w", err)
	}
	// One message is received into again and again: the chunk reader
	// keeps no chunk past the next, so each arrives in the last one's array.
	var m pb.ModelChunk
	if err := stream.RecvMsg(&m); err != nil {
		return nil, 0, nil, fmt.Errorf("fetching model: %w", err)
	}
	total, sum = m.GetTotalSize(), m.GetSha256()
	pending := true
	r, err = model.NewChunkReader(total, func() ([]byte, error) {
		if pending {
			pending = false
			return m.GetData(), nil
		}
		if err := stream.RecvMsg(&m); err != nil {
			return nil, err
		}
		return m.GetData(), nil
	})
	if err != nil {
		return nil, 0, nil, fmt.Errorf("fetching model: %w", err)
	}
	return r, total, sum, nil
}

// RefusedError is returned for an update the coordinator received and
// refused (wrong shapes, non-finite values, a round already closed).
type RefusedError struct {
	Reason string
}

func (e *RefusedError) Error() string { return "the coordinator refused the update: " + e.Reason }

// pushUpdate uploads trained weights with their metrics and energy report.
func pushUpdate(ctx context.Context, cli pb.CoordinatorServiceClient, t *pb.Task, w *model.Weights, n int64, metrics map[string]float64, rep, evalRep *pb.EnergyReport, ds *pb.DatasetInfo) error {
	// Encoded twice, not held: once to hash it for the header, then again
	// as it is sent (cheap beside the network; a copy of a large model is not).
	sum, size, err := model.DigestSafetensors(w, nil)
	if err != nil {
		return fmt.Errorf("encoding update: %w", err)
	}
	h := updateHeader(t, n, sum, size, metrics, rep, evalRep, ds)
	return sendUpdate(ctx, cli, h, func(out io.Writer) error { return model.EncodeSafetensors(out, w, nil) })
}

// updateHeader is the header of task t's update of size bytes with SHA-256
// sum.
func updateHeader(t *pb.Task, n int64, sum [sha256.Size]byte, size int64, metrics map[string]float64, rep, evalRep *pb.EnergyReport, ds *pb.DatasetInfo) *pb.UpdateHeader {
	return &pb.UpdateHeader{
		TaskId: t.GetTaskId(), JobId: t.GetJobId(), Arm: t.GetArm(), Round: t.GetRound(),
		NumSamples: n, TotalSize: size, Sha256: sum[:], Metrics: metrics,
		Energy: rep, EvalEnergy: evalRep, Dataset: ds,
	}
}

// chunkBuffers are the buffers of the update chunks being sent: each goes
// back once gRPC has written it.
var chunkBuffers bulk.Buffers

// sendUpdate uploads an update: header h, which gives its size and
// SHA-256, then the bytes write writes, in chunks as they come.
func sendUpdate(ctx context.Context, cli pb.CoordinatorServiceClient, h *pb.UpdateHeader, write func(io.Writer) error) error {
	stream, err := cli.PushUpdate(ctx)
	if err != nil {
		return fmt.Errorf("pushing update: %w", err)
	}
	if err := stream.Send(&pb.UpdateChunk{Msg: &pb.UpdateChunk_Header{Header: h}}); err != nil {
		return fmt.Errorf("pushing update header: %w", err)
	}
	errAnswered := errors.New("the coordinator answered early")
	cw := model.NewChunkWriter(model.ChunkSize, func(off int64, data []byte) error {
		if err := stream.SendMsg(bulk.Owned(&pb.UpdateChunk{Msg: &pb.UpdateChunk_Data{Data: data}}, data, &chunkBuffers)); err != nil {
			if errors.Is(err, io.EOF) {
				return errAnswered // CloseAndRecv has its reason
			}
			return fmt.Errorf("pushing update chunk at %d: %w", off, err)
		}
		return nil
	})
	cw.Expect(h.GetTotalSize())
	cw.Buffers(func(n int) []byte { return *chunkBuffers.Get(n) })

	err = write(cw)
	if err == nil {
		err = cw.Flush()
	}
	if err != nil && !errors.Is(err, errAnswered) {
		return fmt.Errorf("pushing update: %w", err)
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return fmt.Errorf("pushing update: %w", err)
	}
	if !resp.GetAccepted() {
		return &RefusedError{Reason: resp.GetReason()}
	}
	return nil
}
