package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/auth"
	"github.com/ternml/tern/pkg/coordinator"
	"github.com/ternml/tern/pkg/coordinator/store"
	"github.com/ternml/tern/pkg/worker"
)

// `certs create` writes the bundle, never over an old one, and refuses
// bad flags as usage errors.
func TestCertsCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	r := runCLI(t, false, "certs", "create", "--dir", dir, "--hosts", "localhost,127.0.0.1", "--days", "30")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var want []string
	for _, n := range []string{auth.CACertFile, auth.CAKeyFile, auth.ServerCertFile, auth.ServerKeyFile, auth.TokenFile} {
		want = append(want, filepath.Join(dir, n))
	}
	if got := strings.Fields(r.stdout); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("stdout %q, want the paths %q", got, want)
	}
	if !strings.Contains(r.stderr, "--tls-cert "+want[2]) || !strings.Contains(r.stderr, "--tls-ca "+want[0]) {
		t.Errorf("stderr does not say how to use the files:\n%s", r.stderr)
	}
	for _, p := range []string{want[1], want[3], want[4]} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want mode 0600", p, st.Mode(), err)
		}
	}
	r = runCLI(t, false, "certs", "create", "--dir", dir, "--hosts", "localhost")
	if r.code != 1 || !strings.Contains(r.stderr, "exists") {
		t.Errorf("second create in the same directory: exit %d, %s", r.code, r.stderr)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"certs", "create", "--hosts", "a"}, "--dir is required"},
		{[]string{"certs", "create", "--dir", t.TempDir()}, "--hosts is required"},
		{[]string{"certs", "create", "--dir", t.TempDir(), "--hosts", "a", "--days", "0"}, "--days 0: want 1 to 3650"},
	} {
		r := runCLI(t, false, tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, %s; want 2 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
	r = runCLI(t, false, "certs", "create", "--dir", t.TempDir(), "--hosts", "bad_host")
	if r.code != 1 || !strings.Contains(r.stderr, `host "bad_host" is neither an IP address nor a DNS name`) {
		t.Errorf("bad host: exit %d, %s", r.code, r.stderr)
	}
}

// A coordinator with the bundle's certificate and token serves a worker
// and ternctl that have its CA and token (by flag or environment), over
// real TLS on loopback; ternctl without the token, with another token or
// without the CA is refused, and so is a worker with a wrong token.
func TestClusterWithTLSAndToken(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	if r := runCLI(t, false, "certs", "create", "--dir", dir, "--hosts", "localhost,127.0.0.1"); r.code != 0 {
		t.Fatalf("certs create: %s", r.stderr)
	}
	ca, tok := filepath.Join(dir, auth.CACertFile), filepath.Join(dir, auth.TokenFile)
	sf := auth.ServerFlags{CertFile: filepath.Join(dir, auth.ServerCertFile), KeyFile: filepath.Join(dir, auth.ServerKeyFile), TokenFile: tok}
	srvAuth, err := sf.Load("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	co, err := coordinator.New(coordinator.Options{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Etcd: store.EmbedOptions{UnsafeNoFsync: true}, Auth: srvAuth})
	if err != nil {
		t.Fatal(err)
	}
	addr := co.Addr()
	cli, err := (&auth.ClientFlags{CAFile: ca, TokenFile: tok}).Load(addr)
	if err != nil {
		t.Fatal(err)
	}
	a, err := worker.New(worker.Config{Coordinator: addr, Name: "w1", Slots: 1, Auth: cli, DrainTimeout: clusterDeadline})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	coDone, wDone := make(chan error, 1), make(chan error, 1)
	go func() { coDone <- co.Run(ctx) }()
	go func() { wDone <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-wDone; err != nil {
			t.Errorf("worker: %v", err)
		}
		if err := <-coDone; err != nil {
			t.Errorf("coordinator: %v", err)
		}
	})

	secure := []string{"--coordinator", addr, "--tls-ca", ca, "--token-file", tok}
	eventually(t, "the worker to connect over TLS", func() bool {
		r := runCLI(t, false, append(secure, "get", "workers", "-o", "json")...)
		if r.code != 0 {
			return false
		}
		var list struct{ Items []workerView }
		if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
			t.Fatalf("get workers -o json: %v\n%s", err, r.stdout)
		}
		return len(list.Items) == 1 && list.Items[0].Connected
	})
	t.Setenv(auth.EnvTLSCA, ca)
	t.Setenv(auth.EnvTokenFile, tok)
	if r := runCLI(t, false, "--coordinator", addr, "get", "jobs"); r.code != 0 {
		t.Errorf("with TERN_TLS_CA and TERN_TOKEN_FILE: exit %d, %s", r.code, r.stderr)
	}
	t.Setenv(auth.EnvTLSCA, "")
	t.Setenv(auth.EnvTokenFile, "")

	other := filepath.Join(t.TempDir(), "other")
	if err := os.WriteFile(other, []byte(auth.NewToken()), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no token", []string{"--coordinator", addr, "--tls-ca", ca}, "no join token"},
		{"wrong token", []string{"--coordinator", addr, "--tls-ca", ca, "--token-file", other}, "wrong join token"},
		{"no CA", []string{"--coordinator", addr, "--token-file", tok}, "unavailable"},
		{"remote without flags", []string{"--coordinator", "192.0.2.1:7070"}, "--tls-ca and --token-file are not set"},
	} {
		r := runCLI(t, false, append(tc.args, "get", "jobs")...)
		if r.code != exitConnection || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: exit %d, %q; want %d and %q", tc.name, r.code, r.stderr, exitConnection, tc.want)
		}
	}

	// A worker with a wrong token gives up at once, saying why.
	bad, err := worker.New(worker.Config{Coordinator: addr, Name: "w2", Auth: &auth.Client{TLS: cli.TLS, Token: auth.NewToken()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Run(ctx); err == nil || !strings.Contains(err.Error(), "wrong join token") {
		t.Errorf("worker with a wrong token: %v", err)
	}
}
