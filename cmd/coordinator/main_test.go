package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// A listen address beyond loopback without TLS and a token is refused
// before anything starts, naming the missing flags and the command that
// makes their files.
func TestNonLoopbackNeedsTLSAndToken(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "0.0.0.0:7070"}, "--tls-cert, --tls-key and --token-file are not set (env TERN_TLS_CERT, TERN_TLS_KEY, TERN_TOKEN_FILE)"},
		{[]string{"--listen", ":7070", "--token-file", "t"}, "--tls-cert and --tls-key are not set"},
		{[]string{"--listen", "10.1.2.3:7070", "--tls-cert", "c", "--tls-key", "k"}, "--token-file is not set"},
		{[]string{"--listen", "127.0.0.1:0", "--tls-cert", "c"}, "--tls-cert is set without --tls-key"},
		{[]string{"--listen", "127.0.0.1:0", "--metrics-listen", "9464"}, `metrics address "9464"`},
	} {
		var stderr bytes.Buffer
		err := run(context.Background(), append(tc.args, "--data-dir", t.TempDir()), &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error containing %q", tc.args, err, tc.want)
		}
		if strings.Contains(tc.want, "not set") && !strings.Contains(err.Error(), "ternctl certs create") {
			t.Errorf("%v: %v does not say how to make the files", tc.args, err)
		}
	}
}
