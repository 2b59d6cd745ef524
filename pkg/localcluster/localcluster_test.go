package localcluster

import (
	"encoding/json"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func TestSpecValidate(t *testing.T) {
	ok := Spec{Workers: 2, Slots: 1}
	if err := ok.Validate(); err != nil || ok.Listen != DefaultListen || time.Duration(ok.Grace) != DefaultGrace {
		t.Fatalf("defaults: %+v, %v", ok, err)
	}
	for _, tc := range []struct {
		spec Spec
		want string
	}{
		{Spec{Workers: 0, Slots: 1}, "at least 1 worker"},
		{Spec{Workers: 1, Slots: 0}, "--slots 0"},
		{Spec{Workers: 1, Slots: 1, Spares: -2}, "--spares -2 is negative"},
		{Spec{Workers: 50, Slots: 1, Spares: 15}, "at most 64"},
		{Spec{Workers: 1, Slots: 1, Listen: "10.1.2.3:7070"}, "loopback only"},
		{Spec{Workers: 1, Slots: 1, Listen: "7070"}, "not host:port"},
		{Spec{Workers: 1, Slots: 1, Grace: Duration(-time.Second)}, "negative"},
	} {
		if err := tc.spec.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error saying %q", tc.spec, err, tc.want)
		}
	}
	s := Spec{Workers: 1, Slots: 1, CoordinatorBin: "bin/coordinator", WorkerBin: "/nonexistent/worker"}
	if err := s.checkPrograms(); err == nil || !strings.Contains(err.Error(), "not an absolute path") {
		t.Errorf("relative program: %v", err)
	}
	s.CoordinatorBin = os.Args[0]
	if err := s.checkPrograms(); err == nil || !strings.Contains(err.Error(), "the worker program") {
		t.Errorf("missing program: %v", err)
	}
}

func TestResolveListen(t *testing.T) {
	addr, err := resolveListen("127.0.0.1:0")
	if err != nil || strings.HasSuffix(addr, ":0") {
		t.Fatalf("port 0 resolved to %q, %v", addr, err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := resolveListen(l.Addr().String()); err == nil || !strings.Contains(err.Error(), "pass --listen 127.0.0.1:0") {
		t.Fatalf("a port in use: %v", err)
	}
}

func TestProcessIdentity(t *testing.T) {
	self := Proc{PID: os.Getpid(), StartTicks: startTicks(os.Getpid())}
	if procExists() && self.StartTicks == 0 {
		t.Fatal("no start time for this process although /proc exists")
	}
	if !alive(self) {
		t.Fatal("this process is not alive")
	}
	if procExists() {
		other := self
		other.StartTicks++ // the same pid, started at another time: reused
		if alive(other) {
			t.Fatal("a pid with another start time counts as the recorded process")
		}
	}
	if alive(Proc{PID: 0}) {
		t.Fatal("pid 0 is alive")
	}
}

func TestLock(t *testing.T) {
	dir := t.TempDir()
	if up, err := locked(dir); err != nil || up {
		t.Fatalf("fresh dir: locked %v, %v", up, err)
	}
	f, ok, err := lock(dir)
	if err != nil || !ok {
		t.Fatalf("lock: %v %v", ok, err)
	}
	if up, err := locked(dir); err != nil || !up {
		t.Fatalf("held: locked %v, %v", up, err)
	}
	f.Close()
	if up, err := locked(dir); err != nil || up {
		t.Fatalf("released: locked %v, %v", up, err)
	}
}

func TestStateJSON(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadState(dir); err != ErrNotUp {
		t.Fatalf("no state: %v", err)
	}
	st := &State{Dir: dir, Addr: "127.0.0.1:1", Spec: Spec{Workers: 1, Slots: 2, Grace: Duration(3 * time.Second)},
		Procs: []Proc{{Name: "coordinator", Role: RoleCoordinator, PID: 7}, {Name: "worker-1", Role: RoleWorker, PID: 8}, {Name: "spare-1", Role: RoleSpare}}}
	if err := writeJSON(dir+"/"+stateFile, st); err != nil {
		t.Fatal(err)
	}
	got, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(st)
	b, _ := json.Marshal(got)
	if string(a) != string(b) || !strings.Contains(string(b), `"grace":"3s"`) {
		t.Fatalf("round trip:\n%s\n%s", a, b)
	}
	if ws := got.Workers(); len(ws) != 2 || ws[0].Name != "worker-1" || ws[1].Name != "spare-1" {
		t.Fatalf("workers: %+v", ws)
	}
}
