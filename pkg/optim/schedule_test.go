package optim

import (
	"math"
	"testing"
)

func TestScheduleShapes(t *testing.T) {
	cos, err := NewSchedule("cosine", 1e-3, 1e-4, 10, 110)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		s    Schedule
		step int
		want float64
	}{
		{cos, 0, 1e-4},    // warmup starts at peak/warmup
		{cos, 9, 1e-3},    // last warmup step reaches the peak
		{cos, 10, 1e-3},   // decay starts at the peak
		{cos, 109, 1e-4},  // last step reaches minLR
		{cos, 500, 1e-4},  // past the end stays at minLR
		{cos, 59, 5.5e-4}, // halfway (frac = 49/99 ≈ 0.495): ≈ midpoint
	}
	for _, c := range cases {
		got := c.s.LR(c.step)
		tol := 1e-12
		if c.step == 59 {
			tol = 2e-5
		}
		if math.Abs(got-c.want) > tol {
			t.Errorf("%s step %d: got %g want %g", c.s.Kind, c.step, got, c.want)
		}
	}
	lin, _ := NewSchedule("linear", 1, 0, 0, 11)
	if got := lin.LR(5); math.Abs(got-0.5) > 1e-12 {
		t.Errorf("linear midpoint %g", got)
	}
	con, _ := NewSchedule("constant", 2, 0, 4, 100)
	if con.LR(1) != 1 || con.LR(50) != 2 {
		t.Errorf("constant: %g %g", con.LR(1), con.LR(50))
	}
}

func TestScheduleErrors(t *testing.T) {
	for _, c := range []struct {
		kind          string
		peak, min     float64
		warmup, total int
	}{
		{"cos", 1, 0, 0, 10}, {"cosine", 0, 0, 0, 10}, {"cosine", 1, 2, 0, 10}, {"cosine", 1, 0, -1, 10}, {"cosine", 1, 0, 0, 0},
	} {
		if _, err := NewSchedule(c.kind, c.peak, c.min, c.warmup, c.total); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}
