package sched

import (
	"errors"
	"strings"
	"testing"
)

// parseAssignment reads Assignment.String()'s format back.
func parseAssignment(t *testing.T, s string) Assignment {
	t.Helper()
	var a Assignment
	for f := range strings.FieldsSeq(s) {
		r, rest, _ := strings.Cut(f, ":")
		name, slot, _ := strings.Cut(rest, "/")
		a = append(a, Placement{Rank: atoi(r), Worker: name, Slot: atoi(slot)})
	}
	if err := a.Validate(len(a)); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestReplace(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster Cluster
		layout  Layout
		current string
		failed  []int
		avoid   []string
		want    string
	}{
		{
			name:    "a lost worker's ranks go to a spare, survivors stay",
			cluster: Cluster{Workers: []Worker{w("w1", 4, "used=0,1"), w("s1", 2, "spare")}},
			layout:  Layout{DP: 2, PP: 2},
			current: "0:w1/0 1:w1/1 2:w2/0 3:w2/1",
			failed:  []int{3, 2},
			want:    "0:w1/0 1:w1/1 2:s1/0 3:s1/1",
		},
		{
			name:    "spares first even when a regular worker has room",
			cluster: Cluster{Workers: []Worker{w("a", 4, "used=0"), w("z", 1, "spare")}},
			layout:  Layout{DP: 1, PP: 2},
			current: "0:a/0 1:gone/0",
			failed:  []int{1},
			want:    "0:a/0 1:z/0",
		},
		{
			name: "without spares, the node of the rank's pipeline neighbour",
			cluster: Cluster{Workers: []Worker{
				w("w1", 1, "node=n1", "used=0"), w("w3", 1, "node=n2"), w("w4", 1, "node=n1"),
			}},
			layout:  Layout{DP: 1, PP: 2},
			current: "0:w1/0 1:w2/0",
			failed:  []int{1},
			want:    "0:w1/0 1:w4/0",
		},
		{
			name: "the neighbour's own worker beats its node",
			cluster: Cluster{Workers: []Worker{
				w("w1", 2, "node=n1", "used=0"), w("w0", 1, "node=n1"),
			}},
			layout:  Layout{DP: 1, PP: 2},
			current: "0:w1/0 1:w2/0",
			failed:  []int{1},
			want:    "0:w1/0 1:w1/1",
		},
		{
			name: "consecutive failed stages move together",
			cluster: Cluster{Workers: []Worker{
				w("a", 1, "used=0"), w("b", 1), w("c", 3),
			}},
			layout:  Layout{DP: 1, PP: 3},
			current: "0:a/0 1:x/0 2:x/1",
			failed:  []int{1, 2},
			want:    "0:a/0 1:c/0 2:c/1",
		},
		{
			name: "a run too big for any worker is split",
			cluster: Cluster{Workers: []Worker{
				w("a", 1, "node=n1", "used=0"), w("b", 2, "node=n1"), w("c", 2, "node=n2"),
			}},
			layout:  Layout{DP: 1, PP: 4},
			current: "0:a/0 1:x/0 2:x/1 3:x/2",
			failed:  []int{1, 2, 3},
			want:    "0:a/0 1:b/0 2:b/1 3:c/0",
		},
		{
			name:    "an avoided worker is the last resort",
			cluster: Cluster{Workers: []Worker{w("w1", 2, "used=0"), w("w2", 1)}},
			layout:  Layout{DP: 1, PP: 2},
			current: "0:w1/0 1:w1/1",
			failed:  []int{1},
			avoid:   []string{"w1"},
			want:    "0:w1/0 1:w2/0",
		},
		{
			name:    "an avoided worker when nothing else has room",
			cluster: Cluster{Workers: []Worker{w("w1", 2, "used=0"), w("w2", 1, "used=0")}},
			layout:  Layout{DP: 1, PP: 2},
			current: "0:w1/0 1:w1/1",
			failed:  []int{1},
			avoid:   []string{"w1"},
			want:    "0:w1/0 1:w1/1",
		},
		{
			name:    "survivors' slots are held even if not listed as used",
			cluster: Cluster{Workers: []Worker{w("w1", 2)}},
			layout:  Layout{DP: 1, PP: 2},
			current: "0:w1/0 1:w9/0",
			failed:  []int{1},
			want:    "0:w1/0 1:w1/1",
		},
		{
			name:    "short",
			cluster: Cluster{Workers: []Worker{w("w1", 3, "used=0,1"), w("s1", 1, "spare", "used=0")}},
			layout:  Layout{DP: 2, PP: 2},
			current: "0:w1/0 1:w1/1 2:w2/0 3:w2/1",
			failed:  []int{2, 3},
			want:    "needs 2 slots to replace ranks 2, 3, 1 free on 1 worker (spares included)",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := Replace(tc.cluster, tc.layout, parseAssignment(t, tc.current), tc.failed, tc.avoid)
			got := ""
			if err != nil {
				var ce *CapacityError
				if !errors.As(err, &ce) {
					t.Fatalf("error %v is not a *CapacityError", err)
				}
				got = err.Error()
			} else {
				got = a.String()
			}
			if got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestReplaceInvalid(t *testing.T) {
	l := Layout{DP: 1, PP: 2}
	c := Cluster{Workers: []Worker{w("w1", 2)}}
	for _, tc := range []struct {
		name    string
		current Assignment
		failed  []int
		want    string
	}{
		{"short assignment", Assignment{{0, "w1", 0}}, []int{0}, "assignment places 1 of the job's 2 ranks"},
		{"ranks out of order", Assignment{{1, "w1", 0}, {0, "w1", 1}}, []int{0}, "entry 0 is for rank 1"},
		{"shared slot", Assignment{{0, "w1", 0}, {1, "w1", 0}}, []int{0}, `ranks 0 and 1 share slot 0 of worker "w1"`},
		{"failed rank out of range", Assignment{{0, "w1", 0}, {1, "w1", 1}}, []int{2}, "failed rank 2 is outside 0..1"},
		{"survivor on an unknown worker", Assignment{{0, "w1", 0}, {1, "w7", 0}}, []int{0}, `rank 1 survives on worker "w7", which is not registered`},
		{"survivor beyond capacity", Assignment{{0, "w1", 0}, {1, "w1", 5}}, []int{0}, `rank 1 survives in slot 5 of worker "w1", which has 2 slots`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Replace(c, l, tc.current, tc.failed, nil)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrInvalid containing %q", err, tc.want)
			}
		})
	}
}
