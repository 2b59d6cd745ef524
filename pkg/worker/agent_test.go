package worker

import (
	"strings"
	"testing"

	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

func TestNewRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no name", Config{Coordinator: "127.0.0.1:7070"}, "no name"},
		{"negative slots", Config{Coordinator: "127.0.0.1:7070", Name: "w", Slots: -1}, "-1 slots"},
		{"no port", Config{Coordinator: "127.0.0.1", Name: "w"}, "want host:port"},
		{"remote", Config{Coordinator: "192.0.2.1:7070", Name: "w"}, "not a loopback address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := New(Config{Coordinator: "localhost:7070", Name: "w"}); err != nil {
		t.Fatal(err)
	}
}

// Orders from the wire are bounds-checked before anything starts.
func TestBadOrdersRefused(t *testing.T) {
	a, err := New(Config{Coordinator: "127.0.0.1:7070", Name: "w"})
	if err != nil {
		t.Fatal(err)
	}
	start := func(s *ternv1.StartRank) *ternv1.SessionResponse {
		return &ternv1.SessionResponse{Msg: &ternv1.SessionResponse_StartRank{StartRank: s}}
	}
	for _, tc := range []struct {
		name string
		msg  *ternv1.SessionResponse
		want string
	}{
		{"no job", start(&ternv1.StartRank{Attempt: 1, World: 1}), "job name of 0 bytes"},
		{"rank out of range", start(&ternv1.StartRank{Job: "j", Attempt: 1, World: 2, Rank: 2}), "rank 2 is outside 0..1"},
		{"no world", start(&ternv1.StartRank{Job: "j", Attempt: 1}), "world 0"},
		{"attempt 0", start(&ternv1.StartRank{Job: "j", World: 1}), "attempts count from 1"},
		{"empty", &ternv1.SessionResponse{}, "unknown order"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := a.dispatch(tc.msg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if n := a.Running(); n != 0 {
		t.Fatalf("%d ranks started from bad orders", n)
	}
}

// A rank whose order cannot be carried out (here: a spec that does not
// parse) ends with a failure report instead of hanging or panicking.
func TestUnparsableSpecFailsRank(t *testing.T) {
	a, err := New(Config{Coordinator: "127.0.0.1:7070", Name: "w"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.dispatch(&ternv1.SessionResponse{Msg: &ternv1.SessionResponse_StartRank{StartRank: &ternv1.StartRank{
		Job: "j", Attempt: 1, World: 1, SpecJson: []byte("{"),
	}}}); err != nil {
		t.Fatal(err)
	}
	a.wg.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	rr := a.ranks[rankKey{"j", 1, 0}]
	f := rr.final.GetFailed()
	if f == nil || !strings.Contains(f.Error, "job spec from the coordinator") {
		t.Fatalf("final report %v", rr.final)
	}
}
