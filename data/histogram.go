package data

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// FormatHistograms writes the parts' label histograms as a table, one row
// a site and one column a class, with a total row: what a partition looks
// like, for the progress output (each row indented by two spaces):
//
//	site  samples    0    1    2 …
//	   1     1500  150  148  153 …
//	 all     6000  600  600  600 …
func FormatHistograms(w io.Writer, parts []*Dataset) error {
	classes := 0
	for _, p := range parts {
		if p != nil {
			classes = max(classes, p.Classes)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	var b strings.Builder
	b.WriteString("site\tsamples\t")
	for c := range classes {
		fmt.Fprintf(&b, "%d\t", c)
	}
	b.WriteString("\n")
	total := make([]int, classes)
	n := 0
	row := func(name string, count int, hist []int) {
		fmt.Fprintf(&b, "%s\t%d\t", name, count)
		for c := range classes {
			v := 0
			if c < len(hist) {
				v = hist[c]
			}
			fmt.Fprintf(&b, "%d\t", v)
		}
		b.WriteString("\n")
	}
	for i, p := range parts {
		if p == nil {
			row(fmt.Sprint(i+1), 0, nil)
			continue
		}
		h := p.LabelHistogram()
		for c, v := range h {
			total[c] += v
		}
		n += p.N
		row(fmt.Sprint(i+1), p.N, h)
	}
	row("all", n, total)
	if _, err := io.WriteString(tw, b.String()); err != nil {
		return fmt.Errorf("writing label histograms: %w", err)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("writing label histograms: %w", err)
	}
	return nil
}
