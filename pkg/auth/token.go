package auth

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Token sizes. A generated token is TokenBytes random bytes written as hex;
// a token read from a file must have at least MinTokenBytes characters,
// the same floor pkg/comm puts on job tokens.
const (
	TokenBytes    = 32
	MinTokenBytes = 16
	// maxTokenFileBytes bounds what ReadToken reads: a token file is one
	// short line, and anything much longer is the wrong file.
	maxTokenFileBytes = 4096
)

// NewToken returns a fresh join token: TokenBytes bytes from the system's
// CSPRNG, hex-encoded.
func NewToken() string {
	b := make([]byte, TokenBytes)
	rand.Read(b) // never returns an error (crypto/rand, Go 1.24+)
	return hex.EncodeToString(b)
}

// ReadToken reads a join token from path: the file's content with
// surrounding white space removed. It refuses a file that others than its
// owner and group may read or write (a token is only as secret as its
// file), an empty one, and a token shorter than MinTokenBytes.
func ReadToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("token file %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o006 != 0 {
		return "", fmt.Errorf("token file %s has mode %04o: others may read or write it; run `chmod 600 %s`", path, perm, path)
	}
	buf, err := io.ReadAll(io.LimitReader(f, maxTokenFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	if len(buf) > maxTokenFileBytes {
		return "", fmt.Errorf("token file %s is longer than %d bytes: a token file holds one line, the token", path, maxTokenFileBytes)
	}
	tok := strings.TrimSpace(string(buf))
	if err := CheckToken(tok); err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	return tok, nil
}

// CheckToken says what is wrong with a token, if anything.
func CheckToken(tok string) error {
	switch {
	case tok == "":
		return errors.New("the token is empty; create one with `ternctl certs create`")
	case len(tok) < MinTokenBytes:
		return fmt.Errorf("the token has %d characters: need at least %d random ones (`ternctl certs create` writes %d hex digits)", len(tok), MinTokenBytes, 2*TokenBytes)
	case strings.ContainsFunc(tok, func(r rune) bool { return r < 0x21 || r > 0x7e }):
		// It travels in gRPC metadata, which carries printable ASCII.
		return errors.New("the token has characters other than printable ASCII without spaces")
	}
	return nil
}
