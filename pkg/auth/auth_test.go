package auth

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// callTimeout bounds one health check; it only matters when a test fails.
const callTimeout = 20 * time.Second

// bundle creates a bundle for hosts in a fresh directory.
func bundle(t *testing.T, hosts ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs")
	if _, err := CreateBundle(dir, BundleOptions{Hosts: hosts}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// serve runs a real gRPC server with the health service on addr, secured
// by s, and returns the bound address.
func serve(t *testing.T, addr string, s *Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(s.ServerOptions()...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	done := make(chan struct{})
	go func() { srv.Serve(lis); close(done) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

// check calls Health.Check at target with c's credentials.
func check(t *testing.T, target string, c *Client) error {
	t.Helper()
	conn, err := grpc.NewClient(target, c.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func serverFromBundle(t *testing.T, dir, listen string) *Server {
	t.Helper()
	sf := ServerFlags{CertFile: filepath.Join(dir, ServerCertFile), KeyFile: filepath.Join(dir, ServerKeyFile), TokenFile: filepath.Join(dir, TokenFile)}
	s, err := sf.Load(listen)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Secure() {
		t.Fatal("a server with certificate, key and token is not Secure")
	}
	return s
}

func clientFromBundle(t *testing.T, dir, target string) *Client {
	t.Helper()
	cf := ClientFlags{CAFile: filepath.Join(dir, CACertFile), TokenFile: filepath.Join(dir, TokenFile)}
	c, err := cf.Load(target)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A server with the bundle's certificate and token accepts a client with
// the bundle's CA and token, by IP and by name, and refuses one without
// the token, with a wrong token, without TLS, or trusting another CA.
func TestTLSAndToken(t *testing.T) {
	dir := bundle(t, "localhost", "127.0.0.1")
	addr := serve(t, "127.0.0.1:0", serverFromBundle(t, dir, "127.0.0.1:0"))
	_, port, _ := net.SplitHostPort(addr)
	good := clientFromBundle(t, dir, addr)
	for _, target := range []string{addr, "localhost:" + port} {
		if err := check(t, target, good); err != nil {
			t.Errorf("%s with the CA and the token: %v", target, err)
		}
	}

	noToken := &Client{TLS: good.TLS}
	wantStatus(t, check(t, addr, noToken), codes.Unauthenticated, "no join token")
	wrong := &Client{TLS: good.TLS, Token: NewToken()}
	wantStatus(t, check(t, addr, wrong), codes.Unauthenticated, "wrong join token")
	// A prefix of the token is not the token.
	prefix := &Client{TLS: good.TLS, Token: good.Token[:len(good.Token)-1]}
	wantStatus(t, check(t, addr, prefix), codes.Unauthenticated, "wrong join token")

	// No CA: plaintext against TLS never gets a response.
	if err := check(t, addr, &Client{Token: good.Token}); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext client of a TLS server: %v, want UNAVAILABLE", err)
	}
	// Another cluster's CA does not vouch for this server.
	other := clientFromBundle(t, bundle(t, "127.0.0.1"), addr)
	other.Token = good.Token
	err := check(t, addr, other)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("client trusting another CA: %v, want UNAVAILABLE for an unknown authority", err)
	}
}

// The client checks the name it dialled against the certificate: a
// certificate for other hosts is refused even though the CA signed it.
func TestServerNameVerified(t *testing.T) {
	dir := bundle(t, "coordinator.example", "192.0.2.7")
	addr := serve(t, "127.0.0.1:0", serverFromBundle(t, dir, "127.0.0.1:0"))
	err := check(t, addr, clientFromBundle(t, dir, addr))
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("certificate for coordinator.example and 192.0.2.7 served on 127.0.0.1: %v, want a refusal naming 127.0.0.1", err)
	}
}

// On loopback the token may travel without TLS, and is still checked.
func TestLoopbackTokenWithoutTLS(t *testing.T) {
	tok := NewToken()
	addr := serve(t, "127.0.0.1:0", &Server{Token: tok})
	if err := check(t, addr, &Client{Token: tok}); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, check(t, addr, nil), codes.Unauthenticated, "no join token")
	// And without either, as a local cluster runs.
	if err := check(t, serve(t, "127.0.0.1:0", nil), nil); err != nil {
		t.Fatal(err)
	}
}

// A listen address beyond loopback needs all three server flags; the
// error names those missing and the command that makes them. The
// machine's own non-loopback address is tried for real when it has one.
func TestNonLoopbackNeedsTLSAndToken(t *testing.T) {
	dir := bundle(t, "127.0.0.1")
	full := ServerFlags{CertFile: filepath.Join(dir, ServerCertFile), KeyFile: filepath.Join(dir, ServerKeyFile), TokenFile: filepath.Join(dir, TokenFile)}
	listens := []string{"0.0.0.0:7070", ":7070", "192.0.2.1:7070", "coordinator.example:7070"}
	ip := nonLoopbackIP(t)
	if ip != "" {
		listens = append(listens, net.JoinHostPort(ip, "0"))
	}
	for _, listen := range listens {
		for _, tc := range []struct {
			flags ServerFlags
			want  string
		}{
			{ServerFlags{}, "--tls-cert, --tls-key and --token-file are not set (env TERN_TLS_CERT, TERN_TLS_KEY, TERN_TOKEN_FILE)"},
			{ServerFlags{CertFile: full.CertFile, KeyFile: full.KeyFile}, "--token-file is not set (env TERN_TOKEN_FILE)"},
			{ServerFlags{TokenFile: full.TokenFile}, "--tls-cert and --tls-key are not set"},
		} {
			_, err := tc.flags.Load(listen)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "ternctl certs create") || !strings.Contains(err.Error(), "not a loopback address") {
				t.Errorf("%s with %+v: %v, want an error containing %q and the command", listen, tc.flags, err, tc.want)
			}
		}
		if _, err := full.Load(listen); err != nil {
			t.Errorf("%s with every flag: %v", listen, err)
		}
	}
	if _, err := (&ServerFlags{CertFile: full.CertFile}).Load("127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), "--tls-cert is set without --tls-key") {
		t.Errorf("certificate without key: %v", err)
	}
	if s, err := (&ServerFlags{}).Load("127.0.0.1:7070"); s != nil || err != nil {
		t.Errorf("loopback without flags: %v, %v; want nil, nil", s, err)
	}
	if ip == "" {
		t.Log("no non-loopback address on this machine: serving on one not tried")
		return
	}
	// Served for real on the machine's address, with a certificate naming it.
	dir = bundle(t, ip)
	addr := serve(t, net.JoinHostPort(ip, "0"), serverFromBundle(t, dir, net.JoinHostPort(ip, "0")))
	if err := check(t, addr, clientFromBundle(t, dir, addr)); err != nil {
		t.Errorf("TLS with token on %s: %v", addr, err)
	}
	if _, err := (&ClientFlags{}).Load(addr); err == nil || !strings.Contains(err.Error(), "--tls-ca and --token-file are not set") {
		t.Errorf("client of %s without flags: %v", addr, err)
	}
}

// nonLoopbackIP is an IPv4 address of this machine that is not loopback,
// or "" if it has none.
func nonLoopbackIP(t *testing.T) string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Logf("interface addresses: %v", err)
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	return ""
}

func TestClientFlags(t *testing.T) {
	dir := bundle(t, "127.0.0.1")
	for _, tc := range []struct {
		flags  ClientFlags
		target string
		want   string
	}{
		{ClientFlags{}, "10.0.0.5:7070", "--tls-ca and --token-file are not set (env TERN_TLS_CA, TERN_TOKEN_FILE)"},
		{ClientFlags{TokenFile: filepath.Join(dir, TokenFile)}, "coordinator.example:7070", "--tls-ca is not set (env TERN_TLS_CA)"},
		{ClientFlags{CAFile: filepath.Join(dir, CACertFile)}, "[2001:db8::1]:7070", "--token-file is not set"},
		{ClientFlags{}, "10.0.0.5", "want host:port"},
		{ClientFlags{CAFile: filepath.Join(dir, TokenFile)}, "127.0.0.1:7070", "holds no PEM certificate"},
		{ClientFlags{CAFile: filepath.Join(dir, "nope.crt")}, "127.0.0.1:7070", "no such file"},
	} {
		_, err := tc.flags.Load(tc.target)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v for %s: %v, want an error containing %q", tc.flags, tc.target, err, tc.want)
		}
	}
	if c, err := (&ClientFlags{}).Load("localhost:7070"); c != nil || err != nil {
		t.Errorf("loopback without flags: %v, %v; want nil, nil", c, err)
	}
}

func TestBundle(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	paths, err := CreateBundle(dir, BundleOptions{Hosts: []string{"coord.example", "10.0.0.1", "::1", "*.tern.svc", "coord.example"}, Validity: 30 * 24 * time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 5 {
		t.Fatalf("wrote %v", paths)
	}
	for _, name := range []string{CAKeyFile, ServerKeyFile, TokenFile} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, st.Mode().Perm())
		}
	}
	tok, err := ReadToken(filepath.Join(dir, TokenFile))
	if err != nil || len(tok) != 2*TokenBytes {
		t.Errorf("token %q, %v: want %d hex digits", tok, err, 2*TokenBytes)
	}
	ca, srv := readCert(t, filepath.Join(dir, CACertFile)), readCert(t, filepath.Join(dir, ServerCertFile))
	if !ca.IsCA || srv.IsCA {
		t.Errorf("CA IsCA=%v, server IsCA=%v", ca.IsCA, srv.IsCA)
	}
	if got := strings.Join(srv.DNSNames, ","); got != "coord.example,*.tern.svc" {
		t.Errorf("DNS names %s", got)
	}
	if len(srv.IPAddresses) != 2 {
		t.Errorf("IP addresses %v, want 10.0.0.1 and ::1", srv.IPAddresses)
	}
	if !srv.NotAfter.Equal(now.Add(30 * 24 * time.Hour)) {
		t.Errorf("server certificate ends %v", srv.NotAfter)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, name := range []string{"coord.example", "10.0.0.1", "w1.tern.svc"} {
		if _, err := srv.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, CurrentTime: now}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, err := srv.Verify(x509.VerifyOptions{Roots: pool, DNSName: "other.example", CurrentTime: now}); err == nil {
		t.Error("the certificate verifies for a host not named")
	}

	// A bundle is never overwritten.
	if _, err := CreateBundle(dir, BundleOptions{Hosts: []string{"x"}}); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("second bundle in the same directory: %v", err)
	}
	for _, tc := range []struct {
		o    BundleOptions
		want string
	}{
		{BundleOptions{}, "no hosts"},
		{BundleOptions{Hosts: []string{"a..b"}}, `host "a..b" is neither an IP address nor a DNS name`},
		{BundleOptions{Hosts: []string{"bad_name"}}, "neither an IP address nor a DNS name"},
		{BundleOptions{Hosts: []string{"a", ""}}, "empty host name"},
		{BundleOptions{Hosts: []string{"a"}, Validity: -time.Hour}, "want more than 0"},
		{BundleOptions{Hosts: []string{"a"}, Validity: 20 * 365 * 24 * time.Hour}, "at most 3650 days"},
	} {
		if _, err := CreateBundle(t.TempDir(), tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error containing %q", tc.o, err, tc.want)
		}
	}
}

func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := strings.Repeat("ab", 16)
	if tok, err := ReadToken(write("good", "  "+good+"\n", 0o600)); err != nil || tok != good {
		t.Errorf("good token: %q, %v", tok, err)
	}
	if _, err := ReadToken(write("group", good, 0o640)); err != nil {
		t.Errorf("group-readable token (a Kubernetes secret with fsGroup): %v", err)
	}
	for _, tc := range []struct {
		path, want string
	}{
		{write("world", good, 0o644), "chmod 600"},
		{write("short", "abc\n", 0o600), "has 3 characters: need at least 16"},
		{write("empty", "\n", 0o600), "empty"},
		{write("spaces", "abcdefgh abcdefgh abcdefgh", 0o600), "printable ASCII"},
		{write("long", strings.Repeat("a", 5000), 0o600), "longer than 4096 bytes"},
		{dir, "not a regular file"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		if _, err := ReadToken(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", filepath.Base(tc.path), err, tc.want)
		}
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func wantStatus(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Errorf("got %v %q, want %v containing %q", st.Code(), st.Message(), code, msg)
	}
}
