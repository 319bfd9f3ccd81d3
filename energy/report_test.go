package energy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/report.golden.json")

func sampleReport() Report {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	return Report{
		Start: t0, End: t0.Add(20 * time.Second), Seconds: 20, Concurrent: 1, Measurements: 1,
		Interval: 100 * time.Millisecond, CounterInterval: time.Second,
		GPUs: []GPUReport{{
			UUID: "GPU-0000", Index: 0, Name: "NVIDIA H100 80GB HBM3", Joules: 6000, DeviceJoules: 24000, Method: MethodCounter,
			Attribution: AttributionUtilization, CounterStartJ: 1e6, CounterEndJ: 1.024e6,
			PowerAvgW: 300, PowerMaxW: 420, IntegratedJ: 5990, PowerSource: PowerInstant, UtilAvgPct: 95,
			MemMaxBytes: 4 << 30, Samples: 201, Interval: 100 * time.Millisecond, Shared: true,
			MIG: []string{"MIG-aaaa"}, DriverVersion: "550.54.15", Notes: []string{"a note"},
		}},
		CPU:         []DomainReport{{Name: "package-0", Joules: 1200, DeviceJoules: 2400, Method: MethodCounter, Attribution: AttributionEqual, Wraps: 1}},
		Attribution: AttributionUtilization,
		Estimated:   Estimate{CPUSeconds: 20, WattsPerCore: 10, Joules: 200, Method: MethodEstimated},
	}
}

// The Report's JSON keys are a contract (tracking keeps reports as
// artifacts): this pins them.
func TestReportJSON(t *testing.T) {
	got, err := json.MarshalIndent(sampleReport(), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	const golden = "testdata/report.golden.json"
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("Report JSON changed (-want +got); keys are a contract, run with -update only after a deliberate change:\n%s", diff)
	}
	var back Report
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sampleReport(), back); diff != "" {
		t.Errorf("Report JSON round trip (-want +got):\n%s", diff)
	}
}

func TestMerge(t *testing.T) {
	a := sampleReport()
	b := sampleReport()
	b.Start, b.End, b.Seconds = a.End, a.End.Add(60*time.Second), 60
	b.Concurrent = 0
	b.GPUs[0].Joules, b.GPUs[0].Method, b.GPUs[0].PowerAvgW, b.GPUs[0].PowerMaxW = 12000, MethodIntegrated, 200, 500
	b.GPUs[0].UtilAvgPct, b.GPUs[0].Notes = 75, []string{"a note", "another"}
	b.GPUs = append(b.GPUs, GPUReport{UUID: "GPU-1111", Joules: 5, Method: MethodCounter})
	b.CPU = append(b.CPU, DomainReport{Name: "package-1", Joules: 7, Method: MethodCounter})
	b.Estimated = Estimate{CPUSeconds: 10, WattsPerCore: 4, Joules: 40, Method: MethodEstimated}
	b.LowConfidence = true

	got := a.Merge(b)
	want := sampleReport()
	want.End, want.Seconds, want.Measurements, want.LowConfidence = b.End, 80, 2, true
	g := &want.GPUs[0]
	g.Joules, g.Method, g.PowerMaxW = 18000, MethodIntegrated, 500
	g.PowerAvgW, g.UtilAvgPct = 300*0.25+200*0.75, 95*0.25+75*0.75
	g.IntegratedJ, g.Samples, g.Notes = 2*5990, 402, []string{"a note", "another"}
	g.DeviceJoules, g.CounterStartJ, g.CounterEndJ = 48000, 0, 0 // no counter span across an integrated figure
	want.GPUs = append(want.GPUs, GPUReport{UUID: "GPU-1111", Joules: 5, Method: MethodCounter})
	want.CPU = []DomainReport{
		{Name: "package-0", Joules: 2400, DeviceJoules: 4800, Method: MethodCounter, Attribution: AttributionEqual, Wraps: 2},
		{Name: "package-1", Joules: 7, Method: MethodCounter},
	}
	want.Estimated = Estimate{CPUSeconds: 30, WattsPerCore: 240.0 / 30, Joules: 240, Method: MethodEstimated}
	if diff := cmp.Diff(want, got, cmpFloat); diff != "" {
		t.Errorf("Merge (-want +got):\n%s", diff)
	}
	// Two counter figures: the counter span runs from the first start to
	// the last end; attributions combine to the least exclusive.
	c := sampleReport()
	c.GPUs[0].CounterStartJ, c.GPUs[0].CounterEndJ, c.GPUs[0].Attribution = 1.1e6, 1.2e6, AttributionExclusive
	c.Attribution = AttributionExclusive
	m := c.Merge(a)
	if gm := m.GPUs[0]; gm.CounterStartJ != 1e6 || gm.CounterEndJ != 1.2e6 || gm.Attribution != AttributionUtilization || m.Attribution != AttributionUtilization {
		t.Errorf("Merge counter span %v..%v, attribution %s (report %s); want 1e6..1.2e6, %s", gm.CounterStartJ, gm.CounterEndJ, gm.Attribution, m.Attribution, AttributionUtilization)
	}
	if diff := cmp.Diff(sampleReport(), a); diff != "" {
		t.Errorf("Merge changed its receiver (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(a, Report{}.Merge(a)); diff != "" {
		t.Errorf("Report{}.Merge(a) != a (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(a, a.Merge(Report{})); diff != "" {
		t.Errorf("a.Merge(Report{}) != a (-want +got):\n%s", diff)
	}
}

func TestReportMethod(t *testing.T) {
	tests := []struct {
		r    Report
		want string
		j    float64
	}{
		{Report{Estimated: Estimate{Joules: 50}}, MethodNone, 0},
		{Report{CPU: []DomainReport{{Joules: 2}}, Estimated: Estimate{Joules: 50}}, MethodMeasured, 2},
		{Report{GPUs: []GPUReport{{Joules: 3}, {Joules: 4}}, CPU: []DomainReport{{Joules: 2}}}, MethodMeasured, 9},
	}
	for _, tt := range tests {
		if got, j := tt.r.Method(), tt.r.MeasuredJoules(); got != tt.want || j != tt.j {
			t.Errorf("Method(), MeasuredJoules() of %+v = %s, %v; want %s, %v", tt.r, got, j, tt.want, tt.j)
		}
	}
}

// The probe's output for an operator, driven by a fake GPU.
func TestProbe(t *testing.T) {
	var out bytes.Buffer
	g := newFakeGPU("GPU-p", true)
	g.set(func(g *fakeGPU) { g.mw = 70_000 })
	o := Options{Interval: 5 * time.Millisecond, gpus: gpus(g), PowercapRoot: "/sys/x", powercap: deniedFS{os.DirFS("testdata/powercap")}}
	if err := Probe(t.Context(), &out, 20*time.Millisecond, o); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"energy sources:",
		"nvml     yes  GPU 0 NVIDIA H100 80GB HBM3 GPU-p — energy counter; instant power",
		"rapl     no   CPU packages and DRAM — permission denied",
		"sudo chmod a+r",
		"estimate yes  process CPU time",
		"gpu 0 NVIDIA H100 80GB HBM3 (GPU-p): 0.0 J by counter",
		"power avg 70.0 W",
		"estimate: ",
		"measured energy: measured",
	} {
		if !bytes.Contains(out.Bytes(), []byte(want)) {
			t.Errorf("probe output lacks %q:\n%s", want, out.String())
		}
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, os.ErrClosed }

func TestProbeErrors(t *testing.T) {
	o := Options{noGPU: true, powercap: emptyFS{}}
	if err := Probe(t.Context(), &bytes.Buffer{}, 0, o); err == nil {
		t.Error("Probe(0s) = nil, want an error about the reading time")
	}
	if err := Probe(t.Context(), failWriter{}, time.Millisecond, o); err == nil {
		t.Error("Probe to a failing writer = nil, want the write error")
	}
	if err := Probe(t.Context(), &bytes.Buffer{}, time.Millisecond, Options{Interval: -1}); err == nil {
		t.Error("Probe with Interval -1 = nil, want the options error")
	}
	var out bytes.Buffer
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := Probe(ctx, &out, time.Hour, o); !errors.Is(err, context.Canceled) || !bytes.Contains(out.Bytes(), []byte("measured energy: none")) {
		t.Errorf("Probe with an ended context = %v, output:\n%s\nwant context.Canceled after the reading", err, out.String())
	}
}
