package sched

import (
	"errors"
	"strings"
	"testing"
)

// w builds a worker: w("a", 2) or w("a", 2, "node=n1", "rack=r1", "used=0,1", "spare").
func w(name string, slots int, opts ...string) Worker {
	out := Worker{Name: name, Slots: slots}
	for _, o := range opts {
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "spare":
			out.Spare = true
		case "used":
			for _, s := range strings.Split(v, ",") {
				out.Used = append(out.Used, atoi(s))
			}
		default:
			if out.Labels == nil {
				out.Labels = map[string]string{}
			}
			out.Labels[k] = v
		}
	}
	return out
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

func TestPlace(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster Cluster
		layout  Layout
		want    string // Assignment.String(), or the error text
	}{
		{
			name:    "each replica on its own worker",
			cluster: Cluster{Workers: []Worker{w("w2", 4), w("w1", 4)}},
			layout:  Layout{DP: 2, PP: 2},
			want:    "0:w1/0 1:w1/1 2:w2/0 3:w2/1",
		},
		{
			name:    "best fit: the smallest worker that holds the replica",
			cluster: Cluster{Workers: []Worker{w("big", 4), w("small", 2)}},
			layout:  Layout{DP: 1, PP: 2},
			want:    "0:small/0 1:small/1",
		},
		{
			name: "stages of a replica stay on one node when no worker holds them all",
			cluster: Cluster{Workers: []Worker{
				w("a1", 1, "node=a"), w("b1", 1, "node=b"), w("a2", 1, "node=a"), w("b2", 1, "node=b"),
			}},
			layout: Layout{DP: 2, PP: 2},
			want:   "0:a1/0 1:a2/0 2:b1/0 3:b2/0",
		},
		{
			name: "a node split by interleaved names still hosts whole replicas",
			cluster: Cluster{Workers: []Worker{
				w("w1", 1, "node=x"), w("w2", 1, "node=y"), w("w3", 1, "node=x"), w("w4", 1, "node=y"),
			}},
			layout: Layout{DP: 2, PP: 2},
			want:   "0:w1/0 1:w3/0 2:w2/0 3:w4/0",
		},
		{
			name: "replicas spread over racks before nodes",
			cluster: Cluster{Workers: []Worker{
				w("w1", 2, "node=n1", "rack=r1"), w("w2", 2, "node=n2", "rack=r1"), w("w3", 2, "node=n3", "rack=r2"),
			}},
			layout: Layout{DP: 2, PP: 2},
			want:   "0:w1/0 1:w1/1 2:w3/0 3:w3/1",
		},
		{
			name: "replicas spread over nodes before workers",
			cluster: Cluster{Workers: []Worker{
				w("w1", 2, "node=n1"), w("w2", 2, "node=n1"), w("w3", 2, "node=n2"),
			}},
			layout: Layout{DP: 2, PP: 2},
			want:   "0:w1/0 1:w1/1 2:w3/0 3:w3/1",
		},
		{
			name: "a replica that fits no node crosses as few nodes as it can",
			cluster: Cluster{Workers: []Worker{
				w("a", 1, "node=a"), w("b1", 2, "node=b"), w("b2", 1, "node=b"), w("c", 1, "node=c"),
			}},
			layout: Layout{DP: 1, PP: 4},
			want:   "0:b1/0 1:b1/1 2:b2/0 3:a/0",
		},
		{
			name:    "used slots are skipped",
			cluster: Cluster{Workers: []Worker{w("w1", 4, "used=0,2")}},
			layout:  Layout{DP: 1, PP: 2},
			want:    "0:w1/1 1:w1/3",
		},
		{
			name:    "spare workers are left alone",
			cluster: Cluster{Workers: []Worker{w("s1", 4, "spare"), w("w1", 2)}},
			layout:  Layout{DP: 2, PP: 1},
			want:    "0:w1/0 1:w1/1",
		},
		{
			name:    "declared spare slots are held back on regular workers",
			cluster: Cluster{Workers: []Worker{w("w1", 4), w("w2", 4)}, SpareSlots: 2},
			layout:  Layout{DP: 3, PP: 2},
			want:    "0:w1/0 1:w1/1 2:w2/0 3:w2/1 4:w1/2 5:w1/3",
		},
		{
			name:    "spare workers count towards the declared spare slots",
			cluster: Cluster{Workers: []Worker{w("s1", 2, "spare"), w("w1", 4)}, SpareSlots: 2},
			layout:  Layout{DP: 2, PP: 2},
			want:    "0:w1/0 1:w1/1 2:w1/2 3:w1/3",
		},
		{
			name:    "short: spares reserved",
			cluster: Cluster{Workers: []Worker{w("w1", 4, "used=0,1,2"), w("w2", 4), w("w3", 2)}, SpareSlots: 2},
			layout:  Layout{DP: 4, PP: 2},
			want:    "needs 8 slots (DP 4 × PP 2), 5 free on 3 workers; 2 more slots are reserved as spares",
		},
		{
			name:    "short: a spare worker",
			cluster: Cluster{Workers: []Worker{w("s1", 4, "spare"), w("w1", 2)}},
			layout:  Layout{DP: 1, PP: 3},
			want:    "needs 3 slots (DP 1 × PP 3), 2 free on 1 worker; 4 more slots are reserved as spares; the cluster has only 2 usable slots in all, so the job cannot start until more workers join",
		},
		{
			name:    "short: everything in use",
			cluster: Cluster{Workers: []Worker{w("w1", 2, "used=0,1"), w("w2", 2, "used=0,1")}},
			layout:  Layout{DP: 2, PP: 1},
			want:    "needs 2 slots (DP 2 × PP 1), no slots free",
		},
		{
			name:    "short: no workers",
			cluster: Cluster{},
			layout:  Layout{DP: 2, PP: 2},
			want:    "needs 4 slots (DP 2 × PP 2), no workers are registered",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := Place(tc.cluster, tc.layout)
			got := ""
			if err != nil {
				var ce *CapacityError
				if !errors.As(err, &ce) {
					t.Fatalf("error %v is not a *CapacityError", err)
				}
				got = err.Error()
			} else {
				if err := a.Validate(tc.layout.World()); err != nil {
					t.Fatal(err)
				}
				got = a.String()
			}
			if got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestPlaceInvalid(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster Cluster
		layout  Layout
		want    string
	}{
		{"zero replicas", Cluster{Workers: []Worker{w("w1", 2)}}, Layout{DP: 0, PP: 1}, "layout DP 0 × PP 1: both must be at least 1"},
		{"too many ranks", Cluster{}, Layout{DP: MaxRanks, PP: 2}, "more than 65536 ranks"},
		{"unnamed worker", Cluster{Workers: []Worker{w("", 2)}}, Layout{DP: 1, PP: 1}, "a worker has no name"},
		{"duplicate worker", Cluster{Workers: []Worker{w("w1", 2), w("w1", 2)}}, Layout{DP: 1, PP: 1}, `worker "w1" is listed twice`},
		{"negative slots", Cluster{Workers: []Worker{w("w1", -1)}}, Layout{DP: 1, PP: 1}, `worker "w1" has -1 slots: allowed 0 to 4096`},
		{"used out of range", Cluster{Workers: []Worker{w("w1", 2, "used=2")}}, Layout{DP: 1, PP: 1}, `worker "w1": used slot 2 is outside 0..1`},
		{"used twice", Cluster{Workers: []Worker{w("w1", 2, "used=1,1")}}, Layout{DP: 1, PP: 1}, `worker "w1": slot 1 is listed as used twice`},
		{"negative spares", Cluster{SpareSlots: -1}, Layout{DP: 1, PP: 1}, "spareSlots is -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Place(tc.cluster, tc.layout)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrInvalid containing %q", err, tc.want)
			}
		})
	}
}
