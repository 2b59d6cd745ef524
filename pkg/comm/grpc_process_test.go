package comm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The multi-process test runs ranks as child processes: the test binary
// re-executes itself with grpcChildEnv set to "rank/world", and TestMain
// runs the child instead of the tests. A child listens on an ephemeral
// loopback port, prints "addr ADDR", reads "peers A0 A1 ..." from stdin,
// connects and then obeys one command per stdin line, answering on stdout.
const grpcChildEnv = "TERN_COMM_TEST_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(grpcChildEnv); spec != "" {
		os.Exit(grpcChild(spec, os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

// grpcChild is one rank's process. Commands:
//
//	exchange   send a message to every other rank, receive theirs, check them
//	recv R     wait for a message from rank R that never comes; report how it failed
//	send R     send to rank R; report how it failed
//	exit       close the transport and exit
func grpcChild(spec string, in io.Reader, out io.Writer) int {
	var rank, world int
	if _, err := fmt.Sscanf(spec, "%d/%d", &rank, &world); err != nil {
		fmt.Fprintf(os.Stderr, "child spec %q: %v\n", spec, err)
		return 2
	}
	tr, err := ListenGRPC(GRPCOptions{JobID: "job-procs", Rank: rank, World: world, Token: grpcTestToken, Timeout: DefaultGRPCTimeout})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer tr.Close()
	fmt.Fprintf(out, "addr %s\n", tr.Addr())
	ctx := context.Background()
	lines := bufio.NewScanner(in)
	for lines.Scan() {
		f := strings.Fields(lines.Text())
		if len(f) == 0 {
			continue
		}
		arg := -1
		if len(f) > 1 {
			arg, _ = strconv.Atoi(f[1])
		}
		switch f[0] {
		case "peers":
			if err := tr.Connect(ctx, f[1:]); err != nil {
				fmt.Fprintf(out, "error %v\n", err)
				continue
			}
			fmt.Fprintln(out, "connected")
		case "exchange":
			if err := grpcChildExchange(ctx, tr); err != nil {
				fmt.Fprintf(out, "error %v\n", err)
				continue
			}
			fmt.Fprintln(out, "exchanged")
		case "recv":
			fmt.Fprintln(out, "waiting")
			_, err := tr.Recv(ctx, arg, Tag{Seq: 99})
			fmt.Fprintf(out, "recv-failed %s\n", describePeerErr(err))
		case "send":
			// The first Send may only queue; one of a few fails once the
			// peer is known to be gone, which Recv above has already seen.
			var err error
			for i := 0; err == nil && i < 3; i++ {
				err = tr.Send(ctx, arg, Tag{Seq: 100 + uint64(i)}, []byte("x"))
			}
			fmt.Fprintf(out, "send-failed %s\n", describePeerErr(err))
		case "exit":
			tr.Close()
			fmt.Fprintln(out, "bye")
			return 0
		default:
			fmt.Fprintf(out, "error unknown command %q\n", f[0])
		}
	}
	return 0
}

// grpcChildExchange sends 300 kB to every other rank and checks what they
// sent back.
func grpcChildExchange(ctx context.Context, tr *GRPCTransport) error {
	const n = 300_000
	me := tr.Rank()
	for to := range tr.World() {
		if to != me {
			if err := tr.Send(ctx, to, Tag{Kind: KindP2P, Seq: 1}, grpcPattern(10*me+to, n)); err != nil {
				return err
			}
		}
	}
	for from := range tr.World() {
		if from == me {
			continue
		}
		got, err := tr.Recv(ctx, from, Tag{Kind: KindP2P, Seq: 1})
		if err != nil {
			return err
		}
		if !bytes.Equal(got, grpcPattern(10*from+me, n)) {
			return fmt.Errorf("message from rank %d differs", from)
		}
	}
	return nil
}

// describePeerErr renders what the parent checks about an error.
func describePeerErr(err error) string {
	var pe *PeerError
	rank := -1
	if errors.As(err, &pe) {
		rank = pe.Rank
	}
	return fmt.Sprintf("rank=%d closed=%v timeout=%v err=%v", rank, errors.Is(err, ErrPeerClosed), errors.Is(err, ErrTimeout), err)
}

// grpcProc is the parent's handle on one child.
type grpcProc struct {
	rank   int
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startGRPCProc(t *testing.T, rank, world int) *grpcProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d/%d", grpcChildEnv, rank, world))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &grpcProc{rank: rank, cmd: cmd, stdin: stdin, lines: make(chan string, 16), stderr: &syncBuffer{}}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("rank %d stderr:\n%s", rank, p.stderr.String())
		}
	})
	return p
}

func (p *grpcProc) send(t *testing.T, line string) {
	t.Helper()
	if _, err := fmt.Fprintln(p.stdin, line); err != nil {
		t.Fatalf("rank %d: write %q: %v", p.rank, line, err)
	}
}

// expect returns the child's next line, which must start with prefix.
func (p *grpcProc) expect(t *testing.T, prefix string) string {
	t.Helper()
	select {
	case line, ok := <-p.lines:
		if !ok {
			t.Fatalf("rank %d exited while %q was expected", p.rank, prefix)
		}
		if !strings.HasPrefix(line, prefix) {
			t.Fatalf("rank %d: got %q, want a line starting with %q", p.rank, line, prefix)
		}
		return strings.TrimSpace(strings.TrimPrefix(line, prefix))
	case <-time.After(grpcTestTimeout):
		t.Fatalf("rank %d: no %q within %v", p.rank, prefix, grpcTestTimeout)
	}
	return ""
}

func TestGRPCProcessesPeerKilled(t *testing.T) {
	const world = 3
	procs := make([]*grpcProc, world)
	addrs := make([]string, world)
	for r := range world {
		procs[r] = startGRPCProc(t, r, world)
	}
	for r, p := range procs {
		addrs[r] = p.expect(t, "addr ")
	}
	for _, p := range procs {
		p.send(t, "peers "+strings.Join(addrs, " "))
	}
	for _, p := range procs {
		p.expect(t, "connected")
	}
	for _, p := range procs {
		p.send(t, "exchange")
	}
	for _, p := range procs {
		p.expect(t, "exchanged")
	}

	// Ranks 0 and 1 wait on rank 2, which is then killed outright. They
	// must learn it from the broken streams, long before their 60 s
	// timeout would have fired.
	for _, p := range procs[:2] {
		p.send(t, "recv 2")
		p.expect(t, "waiting")
	}
	if err := procs[2].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	procs[2].cmd.Wait()
	for _, p := range procs[:2] {
		got := p.expect(t, "recv-failed ")
		if !strings.HasPrefix(got, "rank=2 closed=true timeout=false") {
			t.Errorf("rank %d: pending Recv from the killed rank: %s; want a *PeerError for rank 2 wrapping ErrPeerClosed", p.rank, got)
		}
	}
	procs[0].send(t, "send 2")
	if got := procs[0].expect(t, "send-failed "); !strings.HasPrefix(got, "rank=2 closed=true") {
		t.Errorf("rank 0: Send to the killed rank: %s", got)
	}
	for _, p := range procs[:2] {
		p.send(t, "exit")
		p.expect(t, "bye")
		if err := p.cmd.Wait(); err != nil {
			t.Errorf("rank %d: %v", p.rank, err)
		}
	}
}
