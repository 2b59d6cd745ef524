package main

import (
	"testing"
	"time"
)

func TestFmtCount(t *testing.T) {
	for _, c := range []struct {
		n    float64
		want string
	}{{950, "950"}, {1000, "1.00k"}, {11234, "11.2k"}, {3298560, "3.30M"}, {162e6, "162M"}, {1.5e9, "1.50G"}} {
		if got := fmtCount(c.n); got != c.want {
			t.Errorf("fmtCount(%g) = %q, want %q", c.n, got, c.want)
		}
	}
}

func TestFmtBytes(t *testing.T) {
	for _, c := range []struct {
		n    int64
		want string
	}{{0, "0 B"}, {900, "900 B"}, {1536, "1.50 KiB"}, {5452595, "5.20 MiB"}, {300 << 20, "300 MiB"}, {3 << 30, "3.00 GiB"}} {
		if got := fmtBytes(c.n); got != c.want {
			t.Errorf("fmtBytes(%d) = %q, want %q", c.n, got, c.want)
		}
	}
}

func TestFmtDuration(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{{4200 * time.Millisecond, "4.2s"}, {45 * time.Second, "45s"}, {88 * time.Second, "1m28s"}, {2*time.Hour + 3*time.Minute, "2h03m"}} {
		if got := fmtDuration(c.d); got != c.want {
			t.Errorf("fmtDuration(%v) = %q, want %q", c.d, got, c.want)
		}
	}
}

func TestSparkline(t *testing.T) {
	if got := sparkline([]float64{4, 3, 2, 1}, 40); got != "█▆▃▁" {
		t.Errorf("falling = %q", got)
	}
	// Eight values into four columns: each column is the mean of two.
	if got := sparkline([]float64{8, 8, 6, 6, 4, 4, 1, 1}, 4); got != "█▆▄▁" {
		t.Errorf("bucketed = %q", got)
	}
	if got := sparkline([]float64{2, 2}, 10); got != "▁▁" {
		t.Errorf("flat = %q", got)
	}
	if got := sparkline(nil, 10); got != "" {
		t.Errorf("empty = %q", got)
	}
}
