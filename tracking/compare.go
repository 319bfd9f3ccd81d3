package tracking

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// RunReader is what [Compare] reads. [SQLiteStore] provides it, and so
// can any other tracking backend (the MLflow REST client).
type RunReader interface {
	GetRun(ctx context.Context, runID string) (Run, error)
	ChildRuns(ctx context.Context, parentRunID string) ([]Run, error)
	GetMetricHistory(ctx context.Context, runID, key string) ([]Metric, error)
}

var _ RunReader = (*SQLiteStore)(nil)

// Comparison is a job's arms side by side, as [Compare] reads them.
type Comparison struct {
	JobRunID string
	Arms     []ArmSummary // in the order the arm runs started
}

// ArmSummary is one arm of a job, read from its arm run. Per-round metrics
// are taken once per step (the latest point of each step) and summed over
// the steps; a figure the arm never logged is NaN.
type ArmSummary struct {
	Name      string // the cohort.arm tag, else the run's name
	RunID     string
	Federated bool // the cohort.kind tag is "federated"

	FinalAccuracy float64 // test_accuracy at the last step
	BestAccuracy  float64 // the highest test_accuracy of any step
	Rounds        int     // steps ≥ 1 with a round_seconds (or, without any, a test_accuracy): rounds run, or epochs when centralized

	WallSeconds   float64 // sum of round_seconds
	BytesSent     float64 // sum of bytes_sent
	BytesReceived float64 // sum of bytes_received
	EnergyJoules  float64 // sum of energy_joules
	// EnergyJoules split: training, evaluation, and discarded work (sums
	// of train_energy_joules, eval_energy_joules, wasted_energy_joules).
	TrainEnergyJoules  float64
	EvalEnergyJoules   float64
	WastedEnergyJoules float64
	// EnergyAboveIdle is the sum of energy_joules_above_idle.
	EnergyAboveIdle float64
	// GPUUtilization is the mean of the rounds' gpu_utilization_percent.
	GPUUtilization float64
	EnergyMethod   string  // the cohort.energy_method tag: how EnergyJoules was obtained
	CO2Grams       float64 // sum of co2_grams

	AccuracyHistory []Metric // test_accuracy, one point per step, by step

	// DPEpsilon is the ε of central differential privacy the arm spent
	// (dp_epsilon at the last step); NaN for an arm without DP.
	DPEpsilon float64
}

// MegabytesMoved is the model traffic of the arm in MB (10^6 bytes), sent
// and received; NaN when the arm logged neither.
func (a ArmSummary) MegabytesMoved() float64 {
	if math.IsNaN(a.BytesSent) && math.IsNaN(a.BytesReceived) {
		return math.NaN()
	}
	return (zeroIfNaN(a.BytesSent) + zeroIfNaN(a.BytesReceived)) / 1e6
}

// AccuracyPerKJ is the final accuracy per kilojoule of energy; NaN when
// either is unknown or the energy is zero.
func (a ArmSummary) AccuracyPerKJ() float64 {
	if math.IsNaN(a.FinalAccuracy) || math.IsNaN(a.EnergyJoules) || a.EnergyJoules <= 0 {
		return math.NaN()
	}
	return a.FinalAccuracy / (a.EnergyJoules / 1000)
}

// Compare reads the arm runs nested under the job run jobRunID (its child
// runs) into a Comparison. The job run must exist; a job without arms
// gives an empty Comparison.
func Compare(ctx context.Context, r RunReader, jobRunID string) (Comparison, error) {
	if _, err := r.GetRun(ctx, jobRunID); err != nil {
		return Comparison{}, fmt.Errorf("comparing arms of job run %s: %w", jobRunID, err)
	}
	arms, err := r.ChildRuns(ctx, jobRunID)
	if err != nil {
		return Comparison{}, fmt.Errorf("comparing arms of job run %s: %w", jobRunID, err)
	}
	c := Comparison{JobRunID: jobRunID}
	for _, run := range arms {
		a, err := SummarizeArm(ctx, r, run)
		if err != nil {
			return Comparison{}, fmt.Errorf("comparing arms of job run %s: %w", jobRunID, err)
		}
		c.Arms = append(c.Arms, a)
	}
	return c, nil
}

// SummarizeArm reads one arm run into its [ArmSummary], as [Compare] does
// for each arm of a job.
func SummarizeArm(ctx context.Context, r RunReader, run Run) (ArmSummary, error) {
	a := ArmSummary{Name: run.Info.RunName, RunID: run.Info.RunID}
	if v, ok := run.Data.Tag(TagArm); ok && v != "" {
		a.Name = v
	}
	kind, _ := run.Data.Tag(TagKind)
	a.Federated = kind == KindFederated
	a.EnergyMethod, _ = run.Data.Tag(TagEnergyMethod)

	history := func(key string) ([]Metric, error) {
		h, err := r.GetMetricHistory(ctx, run.Info.RunID, key)
		if err != nil {
			return nil, fmt.Errorf("arm run %s: %w", run.Info.RunID, err)
		}
		return lastPerStep(h), nil
	}
	acc, err := history(MetricTestAccuracy)
	if err != nil {
		return a, err
	}
	a.AccuracyHistory = acc
	evaluated := 0
	for _, m := range acc {
		if m.Step > 0 { // step 0 is the initial model, before any round
			evaluated++
		}
	}
	a.FinalAccuracy, a.BestAccuracy = math.NaN(), math.NaN()
	for _, m := range acc {
		a.FinalAccuracy = m.Value
		if !math.IsNaN(m.Value) && (math.IsNaN(a.BestAccuracy) || m.Value > a.BestAccuracy) {
			a.BestAccuracy = m.Value
		}
	}
	eps, err := history(MetricDPEpsilon)
	if err != nil {
		return a, err
	}
	a.DPEpsilon = math.NaN()
	if len(eps) > 0 {
		a.DPEpsilon = eps[len(eps)-1].Value
	}
	for _, f := range []struct {
		key string
		dst *float64
	}{
		{MetricRoundSeconds, &a.WallSeconds},
		{MetricBytesSent, &a.BytesSent},
		{MetricBytesReceived, &a.BytesReceived},
		{MetricEnergyJoules, &a.EnergyJoules},
		{MetricCO2Grams, &a.CO2Grams},
		{MetricTrainEnergyJoules, &a.TrainEnergyJoules},
		{MetricEvalEnergyJoules, &a.EvalEnergyJoules},
		{MetricWastedEnergyJoules, &a.WastedEnergyJoules},
		{MetricEnergyAboveIdle, &a.EnergyAboveIdle},
		{MetricGPUUtilizationPercent, &a.GPUUtilization},
	} {
		h, err := history(f.key)
		if err != nil {
			return a, err
		}
		*f.dst = math.NaN()
		if len(h) > 0 {
			*f.dst = 0
		}
		for _, m := range h {
			*f.dst += m.Value
		}
		switch f.key {
		case MetricRoundSeconds:
			// Every round logs its seconds, evaluated or not (eval.every);
			// a run that logged accuracy alone counts its evaluations.
			for _, m := range h {
				if m.Step > 0 {
					a.Rounds++
				}
			}
			a.Rounds = max(a.Rounds, evaluated)
		case MetricGPUUtilizationPercent:
			if len(h) > 0 {
				a.GPUUtilization /= float64(len(h))
			}
		}
	}
	return a, nil
}

// lastPerStep keeps the latest point (by timestamp) of each step of a
// history sorted by step then timestamp, as GetMetricHistory returns it.
func lastPerStep(h []Metric) []Metric {
	var out []Metric
	for i, m := range h {
		if i+1 < len(h) && h[i+1].Step == m.Step {
			continue
		}
		out = append(out, m)
	}
	return out
}

// WriteTable writes the comparison as an aligned text table, one row per
// arm: arm, kind, final and best test accuracy, rounds, wall seconds, MB
// moved, energy in joules with its method, the part of it spent
// evaluating and on discarded work, the mean GPU utilisation, accuracy
// per kJ (final accuracy divided by energy), milligrams of CO2. Figures an
// arm did not log show as "-".
func (c Comparison) WriteTable(w io.Writer) error {
	header := []string{"arm", "kind", "final acc", "best acc", "rounds", "wall s", "MB moved", "energy J", "energy method", "eval J", "wasted J", "GPU %", "acc/kJ", "CO2 mg"}
	leftAligned := map[int]bool{0: true, 1: true, 8: true}
	rows := [][]string{header}
	for _, a := range c.Arms {
		kind := KindCentralized
		if a.Federated {
			kind = KindFederated
		}
		rows = append(rows, []string{
			a.Name, kind,
			formatFigure(a.FinalAccuracy, 4), formatFigure(a.BestAccuracy, 4),
			strconv.Itoa(a.Rounds),
			formatFigure(a.WallSeconds, 1), formatFigure(a.MegabytesMoved(), 2),
			formatFigure(a.EnergyJoules, 1), cmp.Or(a.EnergyMethod, "-"),
			formatFigure(a.EvalEnergyJoules, 1), formatFigure(a.WastedEnergyJoules, 1),
			formatFigure(a.GPUUtilization, 0),
			formatFigure(a.AccuracyPerKJ(), 3), formatFigure(a.CO2Grams*1000, 2),
		})
	}
	if slices.ContainsFunc(c.Arms, func(a ArmSummary) bool { return !math.IsNaN(a.DPEpsilon) }) {
		// A DP arm's privacy spent; only tables with one show the column.
		rows[0] = append(rows[0], "DP ε")
		for i, a := range c.Arms {
			rows[i+1] = append(rows[i+1], formatFigure(a.DPEpsilon, 2))
		}
		header = rows[0]
	}
	widths := make([]int, len(header))
	for _, row := range rows {
		for i, cell := range row {
			widths[i] = max(widths[i], len([]rune(cell)))
		}
	}
	var b strings.Builder
	for _, row := range rows {
		for i, cell := range row {
			pad := strings.Repeat(" ", widths[i]-len([]rune(cell)))
			if i > 0 {
				b.WriteString("  ")
			}
			if leftAligned[i] {
				b.WriteString(cell + pad)
			} else {
				b.WriteString(pad + cell)
			}
		}
		b.WriteByte('\n')
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("writing comparison table: %w", err)
	}
	return nil
}

// formatFigure prints v with prec decimals, or "-" for NaN (not logged).
func formatFigure(v float64, prec int) string {
	if math.IsNaN(v) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

func zeroIfNaN(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return v
}
