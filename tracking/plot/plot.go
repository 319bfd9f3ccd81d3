// Package plot draws a job's comparison with gonum/plot: test accuracy per
// round of each federated arm against the centralized arm per epoch, and
// accuracy against cumulative energy, side by side in one PNG or SVG. It is
// what `cohort compare` writes and what a job run keeps as its
// comparison.png artifact.
package plot

import (
	"context"
	"fmt"
	"image/color"
	"io"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/cohortfl/cohort/tracking"
)

// Formats are the image formats [Comparison] writes.
var Formats = []string{"png", "svg"}

// palette matches the web UI's series colours (Okabe–Ito).
var palette = []color.RGBA{{0, 114, 178, 255}, {230, 159, 0, 255}, {0, 158, 115, 255}, {204, 121, 167, 255}, {213, 94, 0, 255}, {86, 180, 233, 255}, {0, 0, 0, 255}}

// Comparison draws the comparison of the job run jobRunID, read through r,
// as format ("png" or "svg") to w.
func Comparison(ctx context.Context, r tracking.RunReader, jobRunID, format string, w io.Writer) error {
	cmp, err := tracking.Compare(ctx, r, jobRunID)
	if err != nil {
		return err
	}
	if len(cmp.Arms) == 0 {
		return fmt.Errorf("plotting job run %s: it has no arm runs", jobRunID)
	}
	acc := plot.New()
	acc.Title.Text = "Test accuracy"
	acc.X.Label.Text = "round (federated) / epoch (centralized)"
	acc.Y.Label.Text = "test accuracy"
	en := plot.New()
	en.Title.Text = "Accuracy against cumulative energy"
	en.X.Label.Text = "cumulative energy (J)"
	en.Y.Label.Text = "test accuracy"
	for i, a := range cmp.Arms {
		name := a.Name
		if !a.Federated {
			name += " (per epoch)"
		}
		c := palette[i%len(palette)]
		var xy plotter.XYs
		for _, m := range a.AccuracyHistory {
			if finite(m.Value) {
				xy = append(xy, plotter.XY{X: float64(m.Step), Y: m.Value})
			}
		}
		if err := addLine(acc, name, xy, c); err != nil {
			return err
		}
		cum, err := r.GetMetricHistory(ctx, a.RunID, tracking.MetricEnergyJoulesCumulative)
		if err != nil {
			return fmt.Errorf("plotting %s: %w", a.Name, err)
		}
		at := map[int64]float64{0: 0}
		for _, m := range cum {
			at[m.Step] = m.Value
		}
		var exy plotter.XYs
		for _, m := range a.AccuracyHistory {
			if x, ok := at[m.Step]; ok && finite(x) && finite(m.Value) {
				exy = append(exy, plotter.XY{X: x, Y: m.Value})
			}
		}
		if err := addLine(en, name, exy, c); err != nil {
			return err
		}
	}
	for _, p := range []*plot.Plot{acc, en} {
		p.Legend.Top = false
		p.Legend.Left = false
		p.Add(plotter.NewGrid())
	}
	const width, height = 12 * vg.Inch, 4.5 * vg.Inch
	var c vg.CanvasWriterTo
	switch format {
	case "png":
		c = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(110))}
	case "svg":
		c = vgsvg.New(width, height)
	default:
		return fmt.Errorf("plotting: format %q is none of png, svg", format)
	}
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Millimeter * 6, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align([][]*plot.Plot{{acc, en}}, tiles, dc)
	acc.Draw(canvases[0][0])
	en.Draw(canvases[0][1])
	if _, err := c.WriteTo(w); err != nil {
		return fmt.Errorf("writing the plot: %w", err)
	}
	return nil
}

func addLine(p *plot.Plot, name string, xy plotter.XYs, c color.RGBA) error {
	if len(xy) == 0 {
		return nil
	}
	l, pts, err := plotter.NewLinePoints(xy)
	if err != nil {
		return fmt.Errorf("plotting %s: %w", name, err)
	}
	l.Color, pts.Color = c, c
	l.Width = vg.Points(1.8)
	pts.Radius = vg.Points(2)
	p.Add(l, pts)
	p.Legend.Add(name, l, pts)
	return nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
