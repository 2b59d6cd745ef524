package main

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// fmtCount shows a count with an SI suffix and three significant digits:
// 3298560 -> 3.30M, 11234 -> 11.2k, 950 -> 950.
func fmtCount(n float64) string {
	abs := math.Abs(n)
	for _, u := range []struct {
		div    float64
		suffix string
	}{{1e12, "T"}, {1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if abs >= u.div {
			v := n / u.div
			switch {
			case math.Abs(v) >= 100:
				return fmt.Sprintf("%.0f%s", v, u.suffix)
			case math.Abs(v) >= 10:
				return fmt.Sprintf("%.1f%s", v, u.suffix)
			}
			return fmt.Sprintf("%.2f%s", v, u.suffix)
		}
	}
	return fmt.Sprintf("%.0f", n)
}

// fmtBytes shows a byte count in binary units with three significant
// digits: 1536 -> 1.50 KiB, 5452595 -> 5.20 MiB, 900 -> 900 B. Optimizer
// states span from bytes (APOLLO-Mini on a small model) to gigabytes, so a
// fixed unit would hide the differences that matter.
func fmtBytes(n int64) string {
	v := float64(n)
	for _, u := range []struct {
		div    float64
		suffix string
	}{{1 << 40, "TiB"}, {1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if math.Abs(v) >= u.div {
			x := v / u.div
			switch {
			case math.Abs(x) >= 100:
				return fmt.Sprintf("%.0f %s", x, u.suffix)
			case math.Abs(x) >= 10:
				return fmt.Sprintf("%.1f %s", x, u.suffix)
			}
			return fmt.Sprintf("%.2f %s", x, u.suffix)
		}
	}
	return fmt.Sprintf("%d B", n)
}

// fmtDuration shows a duration the way people read ETAs: 4.2s, 1m28s, 2h03m.
func fmtDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "?"
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second).Seconds()))
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	}
	d = d.Round(time.Minute)
	return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// sparkLevels are the eight block heights a sparkline is drawn with.
var sparkLevels = []rune("▁▂▃▄▅▆▇█")

// sparkline draws values as at most width block characters, each the mean
// of an equal share of the values, scaled between their min and max.
func sparkline(values []float64, width int) string {
	var finite []float64
	for _, v := range values {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			finite = append(finite, v)
		}
	}
	if len(finite) == 0 || width <= 0 {
		return ""
	}
	n := min(width, len(finite))
	buckets := make([]float64, n)
	for i := range n {
		lo, hi := i*len(finite)/n, (i+1)*len(finite)/n
		var sum float64
		for _, v := range finite[lo:hi] {
			sum += v
		}
		buckets[i] = sum / float64(hi-lo)
	}
	lo, hi := buckets[0], buckets[0]
	for _, b := range buckets {
		lo, hi = min(lo, b), max(hi, b)
	}
	var sb strings.Builder
	for _, b := range buckets {
		level := 0
		if hi > lo {
			level = int(math.Round((b - lo) / (hi - lo) * float64(len(sparkLevels)-1)))
		}
		sb.WriteRune(sparkLevels[level])
	}
	return sb.String()
}
