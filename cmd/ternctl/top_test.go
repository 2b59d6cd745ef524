package main

import (
	"strings"
	"testing"

	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

func TestLossPlot(t *testing.T) {
	var pts []*ternv1.StepMetrics
	for s := int64(1); s <= 10; s++ {
		pts = append(pts, &ternv1.StepMetrics{Attempt: 1, Step: s, Loss: float64(11 - s)})
	}
	// A restart ran steps 9 and 10 again: the later values count.
	pts = append(pts, &ternv1.StepMetrics{Attempt: 2, Step: 9, Loss: 1}, &ternv1.StepMetrics{Attempt: 2, Step: 10, Loss: 0})
	got := lossPlot(pts, 10, 5)
	want := strings.Join([]string{
		"        loss",
		"10.0000 |**",
		"        |  **",
		" 5.0000 |    ***",
		"        |       *",
		" 0.0000 |        **",
		"        +----------",
		"         1       10  step",
		"",
	}, "\n")
	if got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
	// More steps than columns: each column is the mean of its share.
	pts = nil
	for s := int64(1); s <= 100; s++ {
		pts = append(pts, &ternv1.StepMetrics{Step: s, Loss: 5})
	}
	if p := lossPlot(pts, 20, 4); strings.Count(p, "*") != 20 || !strings.Contains(p, "5.0000 |********************") {
		t.Fatalf("flat curve:\n%s", p)
	}
	if p := lossPlot(nil, 20, 4); p != "(no steps reported yet)\n" {
		t.Fatalf("no points: %q", p)
	}
}
