package ui

import (
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
)

// Chart sizes, in SVG user units.
const (
	chartW, chartH = 640, 300
	padL, padR     = 64, 16
	padT, padB     = 16, 44
	legendRowH     = 16
	maxChartPoints = 2000
)

// palette holds the series colours (Okabe–Ito, readable for colour-blind eyes).
var palette = []string{"#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#56b4e9", "#f0e442", "#000000"}

// point is one (x, y) pair of a series.
type point struct {
	X, Y float64
	ts   int64 // the metric timestamp, to keep the latest point of a step
}

// series is one line of a line chart.
type series struct {
	Name   string
	Points []point
}

// bar is one bar of a bar chart.
type bar struct {
	Label string
	Value float64
}

// esc escapes s for SVG text and attribute values.
func esc(s string) string { return template.HTMLEscapeString(s) }

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// niceTicks returns about n round tick values covering [lo, hi].
func niceTicks(lo, hi float64, n int) []float64 {
	if !finite(lo) || !finite(hi) {
		return nil
	}
	if hi == lo {
		d := math.Max(math.Abs(lo)*0.1, 1)
		lo, hi = lo-d, hi+d
	}
	raw := (hi - lo) / float64(max(n, 1))
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	// The ticks enclose [lo, hi]: the first at or below lo, the last at or
	// above hi, so no point falls outside the plot.
	var ticks []float64
	top := math.Ceil(hi/step-1e-9) * step
	for v := math.Floor(lo/step+1e-9) * step; v <= top+step*1e-9; v += step {
		ticks = append(ticks, v)
		if len(ticks) > 50 {
			break
		}
	}
	return ticks
}

// formatTick prints an axis value compactly.
func formatTick(v float64) string {
	a := math.Abs(v)
	switch {
	case v == 0:
		return "0"
	case a >= 1e9:
		return strconv.FormatFloat(v/1e9, 'g', 3, 64) + "G"
	case a >= 1e6:
		return strconv.FormatFloat(v/1e6, 'g', 3, 64) + "M"
	case a >= 1e4:
		return strconv.FormatFloat(v/1e3, 'g', 3, 64) + "k"
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// decimate keeps at most maxChartPoints points, always the last.
func decimate(ps []point) []point {
	if len(ps) <= maxChartPoints {
		return ps
	}
	k := (len(ps) + maxChartPoints - 1) / maxChartPoints
	out := make([]point, 0, maxChartPoints+1)
	for i := 0; i < len(ps); i += k {
		out = append(out, ps[i])
	}
	if last := ps[len(ps)-1]; out[len(out)-1] != last {
		out = append(out, last)
	}
	return out
}

// lineChart draws the series as an SVG line chart with axes, labels and a
// legend. Every series is one <path class="series"> (points that are NaN or
// infinite break the line), plus circles when it has a single point; the
// chart says so when no series has a finite point.
func lineChart(title, xLabel, yLabel string, ss []series) template.HTML {
	xmin, xmax, ymin, ymax := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for i := range ss {
		ss[i].Points = decimate(ss[i].Points)
		for _, p := range ss[i].Points {
			if finite(p.X) && finite(p.Y) {
				xmin, xmax = math.Min(xmin, p.X), math.Max(xmax, p.X)
				ymin, ymax = math.Min(ymin, p.Y), math.Max(ymax, p.Y)
			}
		}
	}
	legendH := 0
	if len(ss) > 1 {
		legendH = legendRowH * ((len(ss) + 3) / 4)
	}
	h := chartH + legendH
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" role="img" aria-label="%s" xmlns="http://www.w3.org/2000/svg">`, chartW, h, esc(title))
	fmt.Fprintf(&b, `<title>%s</title>`, esc(title))
	if !finite(xmin) {
		fmt.Fprintf(&b, `<text class="empty" x="%d" y="%d" text-anchor="middle">no finite values to plot</text></svg>`, chartW/2, chartH/2)
		return template.HTML(b.String())
	}
	xt := niceTicks(xmin, xmax, 8)
	yt := niceTicks(ymin, ymax, 5)
	x0, x1 := xt[0], xt[len(xt)-1]
	y0, y1 := yt[0], yt[len(yt)-1]
	pw, ph := float64(chartW-padL-padR), float64(chartH-padT-padB)
	sx := func(x float64) float64 { return padL + (x-x0)/(x1-x0)*pw }
	sy := func(y float64) float64 { return padT + ph - (y-y0)/(y1-y0)*ph }
	axes(&b, xt, yt, sx, sy, xLabel, yLabel)
	for i, s := range ss {
		color := palette[i%len(palette)]
		var d strings.Builder
		pen := false
		var lone []point
		for j, p := range s.Points {
			if !finite(p.X) || !finite(p.Y) {
				pen = false
				continue
			}
			cmd := "L"
			if !pen {
				cmd = "M"
				next := j + 1
				if next >= len(s.Points) || !finite(s.Points[next].Y) || !finite(s.Points[next].X) {
					lone = append(lone, p)
				}
			}
			fmt.Fprintf(&d, "%s%.1f %.1f", cmd, sx(p.X), sy(p.Y))
			pen = true
		}
		fmt.Fprintf(&b, `<path class="series" data-series="%s" d="%s" fill="none" stroke="%s" stroke-width="2"><title>%s</title></path>`,
			esc(s.Name), d.String(), color, esc(s.Name))
		for _, p := range lone {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`, sx(p.X), sy(p.Y), color)
		}
	}
	if len(ss) > 1 {
		for i, s := range ss {
			x := padL + (i%4)*((chartW-padL)/4)
			y := chartH + (i/4)*legendRowH
			fmt.Fprintf(&b, `<g class="legend"><rect x="%d" y="%d" width="12" height="4" fill="%s"/><text x="%d" y="%d">%s</text></g>`,
				x, y-4, palette[i%len(palette)], x+16, y+1, esc(truncateRunes(s.Name, 24)))
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// barChart draws one bar per entry; NaN values draw no bar and say "n/a".
func barChart(title, yLabel string, bars []bar) template.HTML {
	ymax := 0.0
	ymin := 0.0
	for _, v := range bars {
		if finite(v.Value) {
			ymax, ymin = math.Max(ymax, v.Value), math.Min(ymin, v.Value)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart bars" viewBox="0 0 %d %d" role="img" aria-label="%s" xmlns="http://www.w3.org/2000/svg">`, chartW, chartH, esc(title))
	fmt.Fprintf(&b, `<title>%s</title>`, esc(title))
	if len(bars) == 0 {
		fmt.Fprintf(&b, `<text class="empty" x="%d" y="%d" text-anchor="middle">nothing to plot</text></svg>`, chartW/2, chartH/2)
		return template.HTML(b.String())
	}
	yt := niceTicks(ymin, math.Max(ymax, ymin+1e-12), 5)
	if ymax == 0 && ymin == 0 {
		yt = []float64{0, 1}
	}
	y0, y1 := yt[0], yt[len(yt)-1]
	pw, ph := float64(chartW-padL-padR), float64(chartH-padT-padB)
	sy := func(y float64) float64 { return padT + ph - (y-y0)/(y1-y0)*ph }
	slot := pw / float64(len(bars))
	sx := func(x float64) float64 { return padL + x*slot }
	axes(&b, nil, yt, sx, sy, "", yLabel)
	for i, v := range bars {
		cx := sx(float64(i) + 0.5)
		bw := math.Min(slot*0.7, 80)
		label := truncateRunes(v.Label, max(3, int(slot/7)))
		fmt.Fprintf(&b, `<text class="tick" x="%.1f" y="%d" text-anchor="middle">%s</text>`, cx, chartH-padB+16, esc(label))
		if !finite(v.Value) {
			fmt.Fprintf(&b, `<text class="na" x="%.1f" y="%.1f" text-anchor="middle">n/a</text>`, cx, sy(0)-4)
			continue
		}
		top, bottom := sy(math.Max(v.Value, 0)), sy(math.Min(v.Value, 0))
		fmt.Fprintf(&b, `<rect class="bar" data-label="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s: %s</title></rect>`,
			esc(v.Label), cx-bw/2, top, bw, math.Max(bottom-top, 0.5), palette[i%len(palette)], esc(v.Label), esc(formatValue(v.Value)))
		fmt.Fprintf(&b, `<text class="value" x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, cx, top-4, esc(formatTick(v.Value)))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// axes draws the grid, tick labels and axis labels. xt may be nil (bar charts).
func axes(b *strings.Builder, xt, yt []float64, sx, sy func(float64) float64, xLabel, yLabel string) {
	bottom := chartH - padB
	for _, y := range yt {
		fmt.Fprintf(b, `<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>`, padL, chartW-padR, sy(y), sy(y))
		fmt.Fprintf(b, `<text class="tick" x="%d" y="%.1f" text-anchor="end">%s</text>`, padL-6, sy(y)+4, esc(formatTick(y)))
	}
	for _, x := range xt {
		fmt.Fprintf(b, `<line class="grid" x1="%.1f" x2="%.1f" y1="%d" y2="%d"/>`, sx(x), sx(x), padT, bottom)
		fmt.Fprintf(b, `<text class="tick" x="%.1f" y="%d" text-anchor="middle">%s</text>`, sx(x), bottom+16, esc(formatTick(x)))
	}
	fmt.Fprintf(b, `<line class="axis" x1="%d" x2="%d" y1="%d" y2="%d"/>`, padL, chartW-padR, bottom, bottom)
	fmt.Fprintf(b, `<line class="axis" x1="%d" x2="%d" y1="%d" y2="%d"/>`, padL, padL, padT, bottom)
	if xLabel != "" {
		fmt.Fprintf(b, `<text class="label" x="%d" y="%d" text-anchor="middle">%s</text>`, padL+(chartW-padL-padR)/2, bottom+34, esc(xLabel))
	}
	if yLabel != "" {
		fmt.Fprintf(b, `<text class="label" transform="translate(14 %d) rotate(-90)" text-anchor="middle">%s</text>`, padT+(bottom-padT)/2, esc(yLabel))
	}
}

func truncateRunes(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
