package sched

import (
	"errors"
	"slices"
	"testing"
)

func TestShrinkDropsWholeReplicas(t *testing.T) {
	l := Layout{DP: 3, PP: 2}
	cur := Assignment{{0, "a", 0}, {1, "a", 1}, {2, "b", 0}, {3, "b", 1}, {4, "c", 0}, {5, "c", 1}}
	next, src, err := Shrink(l, cur, []int{3, 2, 3}, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := Assignment{{0, "a", 0}, {1, "a", 1}, {2, "c", 0}, {3, "c", 1}}
	if !slices.Equal(next, want) || !slices.Equal(src, []int{0, 1, 4, 5}) {
		t.Fatalf("got %v sources %v, want %v sources [0 1 4 5]", next, src, want)
	}
	if err := next.Validate(4); err != nil {
		t.Fatal(err)
	}
	// Losing a rank of every replica leaves nothing to continue with.
	// keep bounds the survivors: the first ones stay.
	next, src, err = Shrink(l, cur, []int{3}, 1)
	if err != nil || !slices.Equal(next, want[:2]) || !slices.Equal(src, []int{0, 1}) {
		t.Fatalf("keep 1: got %v sources %v err %v, want %v sources [0 1]", next, src, err, want[:2])
	}
	if _, _, err := Shrink(l, cur, []int{3}, 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("keep 0: got %v, want ErrInvalid", err)
	}
	if _, _, err := Shrink(l, cur, []int{0, 3, 5}, 3); !errors.Is(err, ErrInvalid) {
		t.Fatalf("every replica lost: got %v, want ErrInvalid", err)
	}
	if _, _, err := Shrink(l, cur, []int{6}, 3); !errors.Is(err, ErrInvalid) {
		t.Fatalf("rank out of range: got %v, want ErrInvalid", err)
	}
}

func TestGrowKeepsSurvivorsAndPlacesNewReplicas(t *testing.T) {
	l := Layout{DP: 2, PP: 2}
	cur := Assignment{{0, "a", 0}, {1, "a", 1}}
	c := Cluster{Workers: []Worker{
		{Name: "a", Slots: 2, Used: []int{0, 1}},
		{Name: "b", Slots: 1},
		{Name: "c", Slots: 2},
	}}
	next, err := Grow(c, l, cur, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Assignment{{0, "a", 0}, {1, "a", 1}, {2, "c", 0}, {3, "c", 1}}
	if !slices.Equal(next, want) {
		t.Fatalf("got %v, want %v (the new replica's stages together on c)", next, want)
	}
	// Too few free slots: a capacity error, not a partial placement.
	c.Workers = c.Workers[:2]
	var ce *CapacityError
	if _, err := Grow(c, l, cur, nil); !errors.As(err, &ce) {
		t.Fatalf("short of slots: got %v, want *CapacityError", err)
	}
	// current must be whole replicas, fewer than the layout's.
	for _, bad := range []Assignment{nil, cur[:1], append(slices.Clone(cur), Placement{2, "b", 0}, Placement{3, "c", 0})} {
		if _, err := Grow(c, l, bad, nil); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Grow(%v): got %v, want ErrInvalid", bad, err)
		}
	}
}
