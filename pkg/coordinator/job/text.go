package job

import (
	"fmt"
	"strings"

	"github.com/ternml/tern/pkg/coordinator/sched"
)

// The sentences users read in `describe`. They are built here so the
// handlers read as state changes, and so the wording stays consistent.

// shape writes "4 ranks (DP 2 × PP 2)".
func (j *Job) shape() string {
	return fmt.Sprintf("%s (DP %d × PP %d)", plural(j.Spec.World(), "rank"), j.Spec.DP, j.Spec.PP)
}

// budget writes the restart policy.
func (j *Job) budget() string {
	if j.Spec.MaxRestarts == 0 {
		return "no restarts (restartPolicy.maxRestarts is 0)"
	}
	return "up to " + plural(j.Spec.MaxRestarts, "restart")
}

// restartNote writes "(restart 1 of 2)" for the restart just counted.
func (j *Job) restartNote() string {
	return fmt.Sprintf("(restart %d of %d)", j.Restarts, j.Spec.MaxRestarts)
}

// exhausted explains why a failure ends the job.
func (j *Job) exhausted() string {
	if j.Spec.MaxRestarts == 0 {
		return "the job does not restart (restartPolicy.maxRestarts is 0)"
	}
	return fmt.Sprintf("no restarts left (%d of %d used, restartPolicy.maxRestarts)", j.Restarts, j.Spec.MaxRestarts)
}

// from writes where training continues: "from step 120" or "from the start".
func from(step int64) string {
	if step == 0 {
		return "from the start"
	}
	return fmt.Sprintf("from step %d", step)
}

// onWorkers writes "2 workers (w1, w2)", naming at most four.
func onWorkers(a sched.Assignment) string {
	ws := a.Workers()
	const shown = 4
	names := strings.Join(ws[:min(len(ws), shown)], ", ")
	if len(ws) > shown {
		names += fmt.Sprintf(", and %d more", len(ws)-shown)
	}
	return fmt.Sprintf("%s (%s)", plural(len(ws), "worker"), names)
}

// allRanks writes "all 4 ranks", "both ranks" or "the only rank".
func (j *Job) allRanks() string {
	switch n := j.world(); n {
	case 1:
		return "the only rank"
	case 2:
		return "both ranks"
	default:
		return fmt.Sprintf("all %d ranks", n)
	}
}

// committed writes "after step 7 was committed" or "before any step was committed".
func committed(step int64) string {
	if step == 0 {
		return "before any step was committed"
	}
	return fmt.Sprintf("after step %d was committed", step)
}

// rankList writes "rank 3" or "ranks 1, 2, 5".
func rankList(ranks []int) string {
	s := make([]string, len(ranks))
	for i, r := range ranks {
		s[i] = fmt.Sprint(r)
	}
	if len(ranks) == 1 {
		return "rank " + s[0]
	}
	return "ranks " + strings.Join(s, ", ")
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
