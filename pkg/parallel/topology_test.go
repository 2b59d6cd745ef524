package parallel

import (
	"reflect"
	"strings"
	"testing"
)

func TestTopologyRanks(t *testing.T) {
	top, err := TopologyOfWorld(6, 3)
	if err != nil {
		t.Fatal(err)
	}
	if top.DP != 2 || top.PP != 3 || top.World() != 6 {
		t.Fatalf("got %+v world %d, want DP=2 PP=3 world 6", top, top.World())
	}
	for r := range top.World() {
		dp, pp, err := top.Coords(r)
		if err != nil {
			t.Fatal(err)
		}
		if dp != r/3 || pp != r%3 {
			t.Errorf("Coords(%d) = (%d,%d), want (%d,%d)", r, dp, pp, r/3, r%3)
		}
		back, err := top.Rank(dp, pp)
		if err != nil || back != r {
			t.Errorf("Rank(%d,%d) = %d, %v; want %d", dp, pp, back, err, r)
		}
	}
	groups := []struct {
		name string
		get  func() ([]int, error)
		want []int
	}{
		{"pipeline 0", func() ([]int, error) { return top.PipelineGroup(0) }, []int{0, 1, 2}},
		{"pipeline 1", func() ([]int, error) { return top.PipelineGroup(1) }, []int{3, 4, 5}},
		{"vocab 1", func() ([]int, error) { return top.VocabGroup(1) }, []int{3, 4, 5}},
		{"dp 0", func() ([]int, error) { return top.DPGroup(0) }, []int{0, 3}},
		{"dp 2", func() ([]int, error) { return top.DPGroup(2) }, []int{2, 5}},
	}
	for _, g := range groups {
		got, err := g.get()
		if err != nil || !reflect.DeepEqual(got, g.want) {
			t.Errorf("%s group = %v, %v; want %v", g.name, got, err, g.want)
		}
	}
	for _, c := range []struct{ rank, prev, next int }{{0, -1, 1}, {1, 0, 2}, {2, 1, -1}, {3, -1, 4}, {5, 4, -1}} {
		prev, next, err := top.Neighbours(c.rank)
		if err != nil || prev != c.prev || next != c.next {
			t.Errorf("Neighbours(%d) = %d, %d, %v; want %d, %d", c.rank, prev, next, err, c.prev, c.next)
		}
	}
}

func TestTopologyErrors(t *testing.T) {
	top := Topology{DP: 2, PP: 2}
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"world not divisible", second(TopologyOfWorld(6, 4)), "world size 6 is not a multiple of the pipeline size 4"},
		{"zero world", second(TopologyOfWorld(0, 1)), "world size must be at least 1"},
		{"zero pipeline", second(TopologyOfWorld(4, 0)), "pipeline size must be at least 1"},
		{"zero dp", second(NewTopology(0, 2)), "data-parallel size must be at least 1"},
		{"rank out of range", third(top.Coords(4)), "rank 4 out of range [0,4)"},
		{"replica out of range", second(top.Rank(2, 0)), "replica 2 out of range"},
		{"stage out of range", second(top.DPGroup(-1)), "stage -1 out of range"},
		{"pipeline group", second(top.PipelineGroup(5)), "replica 5 out of range"},
	}
	for _, c := range cases {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to contain %q", c.name, c.err, c.want)
		}
	}
}

func second[A any](_ A, err error) error { return err }

func third[A, B any](_ A, _ B, err error) error { return err }
