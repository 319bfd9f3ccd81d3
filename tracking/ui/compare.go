package ui

import (
	"bytes"
	"context"
	"html/template"
	"math"
	"net/http"

	"github.com/cohortfl/cohort/tracking"
)

// sitePanel is the per-site bars of one federated arm.
type sitePanel struct {
	Arm                   string
	Samples, Time, Energy template.HTML
	EnergyMethod          string
}

func (h *Handler) compare(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	job, err := h.store.GetRun(ctx, r.PathValue("id"))
	if err != nil {
		h.fail(w, "job run "+r.PathValue("id"), err)
		return
	}
	cmp, err := tracking.Compare(ctx, h.store, job.Info.RunID)
	if err != nil {
		h.fail(w, "comparison of "+job.Info.RunName, err)
		return
	}
	var accSeries, accEnergy []series
	var energyBars, timeBars []bar
	var panels []sitePanel
	for _, a := range cmp.Arms {
		name := a.Name
		if !a.Federated {
			name += " (per epoch)"
		}
		accSeries = append(accSeries, historySeries(name, a.AccuracyHistory))
		cum, err := h.store.GetMetricHistory(ctx, a.RunID, tracking.MetricEnergyJoulesCumulative)
		if err != nil {
			h.fail(w, "energy of "+a.Name, err)
			return
		}
		accEnergy = append(accEnergy, joinByStep(name, cum, a.AccuracyHistory))
		energyBars = append(energyBars, bar{Label: a.Name, Value: a.EnergyJoules})
		timeBars = append(timeBars, bar{Label: a.Name, Value: a.WallSeconds})
		if a.Federated {
			p, err := h.sitePanel(ctx, a)
			if err != nil {
				h.fail(w, "sites of "+a.Name, err)
				return
			}
			panels = append(panels, p)
		}
	}
	var table bytes.Buffer
	_ = cmp.WriteTable(&table)
	crumb := []link{{h.base + "/", "experiments"}, {h.base + "/experiments/" + job.Info.ExperimentID, "experiment " + job.Info.ExperimentID}, {h.base + "/runs/" + job.Info.RunID, job.Info.RunName}}
	h.render(w, http.StatusOK, "Comparison: "+job.Info.RunName, crumb, compareBody, struct {
		Base             string
		Job              tracking.Run
		Table            string
		Accuracy, AccVsJ template.HTML
		Energy, WallTime template.HTML
		Sites            []sitePanel
		Arms             []tracking.ArmSummary
	}{
		Base: h.base, Job: job, Table: table.String(), Arms: cmp.Arms,
		Accuracy: lineChart("test accuracy per round (federated) and per epoch (centralized)", "round / epoch", "test accuracy", accSeries),
		AccVsJ:   lineChart("test accuracy against cumulative energy", "cumulative energy (J)", "test accuracy", accEnergy),
		Energy:   barChart("energy per arm (J)", "J", energyBars),
		WallTime: barChart("wall time per arm (s)", "s", timeBars),
		Sites:    panels,
	})
}

// sitePanel sums each site run of a federated arm: its latest sample
// count, its training seconds and its energy (measured where the site
// measured, else the CPU-time estimate; the panel says which).
func (h *Handler) sitePanel(ctx context.Context, a tracking.ArmSummary) (sitePanel, error) {
	sites, err := h.store.ChildRuns(ctx, a.RunID)
	if err != nil {
		return sitePanel{}, err
	}
	var samples, secs, joules []bar
	methods := map[string]bool{}
	for _, s := range sites {
		label, ok := s.Data.Tag(tracking.TagSite)
		if !ok {
			label = s.Info.RunName
		}
		n := math.NaN()
		if m, ok := s.Data.Metric(tracking.MetricNumSamples); ok {
			n = m.Value
		}
		t, err := h.sumPerStep(ctx, s.Info.RunID, tracking.MetricTrainSeconds)
		if err != nil {
			return sitePanel{}, err
		}
		method, _ := s.Data.Tag(tracking.TagEnergyMethod)
		var e float64
		if method == "measured" {
			g, err := h.sumPerStep(ctx, s.Info.RunID, tracking.MetricGPUEnergyJoules)
			if err != nil {
				return sitePanel{}, err
			}
			c, err := h.sumPerStep(ctx, s.Info.RunID, tracking.MetricCPUEnergyJoules)
			if err != nil {
				return sitePanel{}, err
			}
			e = zeroNaN(g) + zeroNaN(c)
		} else {
			method = "estimated"
			if e, err = h.sumPerStep(ctx, s.Info.RunID, tracking.MetricEstimatedEnergyJoules); err != nil {
				return sitePanel{}, err
			}
		}
		methods[method] = true
		samples = append(samples, bar{label, n})
		secs = append(secs, bar{label, t})
		joules = append(joules, bar{label, e})
	}
	m := "estimated"
	if methods["measured"] {
		m = "measured"
		if methods["estimated"] {
			m = "measured and estimated (mixed: not comparable across sites)"
		}
	}
	return sitePanel{
		Arm:          a.Name,
		Samples:      barChart(a.Name+": samples per site", "samples", samples),
		Time:         barChart(a.Name+": training seconds per site (all rounds)", "s", secs),
		Energy:       barChart(a.Name+": energy per site (J, all rounds)", "J", joules),
		EnergyMethod: m,
	}, nil
}

// sumPerStep sums a metric's latest value of each step; NaN without any.
func (h *Handler) sumPerStep(ctx context.Context, runID, key string) (float64, error) {
	hist, err := h.store.GetMetricHistory(ctx, runID, key)
	if err != nil {
		return 0, err
	}
	s := historySeries(key, hist)
	if len(s.Points) == 0 {
		return math.NaN(), nil
	}
	sum := 0.0
	for _, p := range s.Points {
		sum += p.Y
	}
	return sum, nil
}

// joinByStep pairs x and y histories on their step: one point (x, y) per
// step both have.
func joinByStep(name string, xs, ys []tracking.Metric) series {
	xsS, ysS := historySeries("", xs), historySeries("", ys)
	at := make(map[float64]float64, len(xsS.Points))
	for _, p := range xsS.Points {
		at[p.X] = p.Y
	}
	out := series{Name: name}
	for _, p := range ysS.Points {
		if x, ok := at[p.X]; ok {
			out.Points = append(out.Points, point{X: x, Y: p.Y})
		} else if p.X == 0 {
			out.Points = append(out.Points, point{X: 0, Y: p.Y}) // the initial model: no energy spent yet
		}
	}
	return out
}

func zeroNaN(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return v
}
