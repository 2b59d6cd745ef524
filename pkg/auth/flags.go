package auth

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// Flag names and their environment variables, the same in every binary.
const (
	FlagTLSCert   = "tls-cert"
	FlagTLSKey    = "tls-key"
	FlagTLSCA     = "tls-ca"
	FlagTokenFile = "token-file"

	EnvTLSCert   = "TERN_TLS_CERT"
	EnvTLSKey    = "TERN_TLS_KEY"
	EnvTLSCA     = "TERN_TLS_CA"
	EnvTokenFile = "TERN_TOKEN_FILE"
)

// createHint is the command that makes the files the flags name.
const createHint = "create them with `ternctl certs create --dir DIR --hosts HOST,...`"

// FlagSet is what Register needs of a flag set: both the standard
// library's *flag.FlagSet and cobra's *pflag.FlagSet have it.
type FlagSet interface {
	StringVar(p *string, name, value, usage string)
}

// ServerFlags are the coordinator's security flags.
type ServerFlags struct {
	CertFile, KeyFile, TokenFile string
}

// Register adds --tls-cert, --tls-key and --token-file to fs, each
// defaulting to its environment variable.
func (f *ServerFlags) Register(fs FlagSet) {
	fs.StringVar(&f.CertFile, FlagTLSCert, os.Getenv(EnvTLSCert), "PEM certificate the coordinator serves TLS with, e.g. DIR/"+ServerCertFile+" written by ternctl certs create (env "+EnvTLSCert+"); required unless --listen is loopback")
	fs.StringVar(&f.KeyFile, FlagTLSKey, os.Getenv(EnvTLSKey), "PEM private key of --tls-cert, e.g. DIR/"+ServerKeyFile+" (env "+EnvTLSKey+")")
	fs.StringVar(&f.TokenFile, FlagTokenFile, os.Getenv(EnvTokenFile), "file holding the cluster's join token, e.g. DIR/"+TokenFile+"; every call must carry it (env "+EnvTokenFile+"); required unless --listen is loopback")
}

// Load checks the flags against the listen address and loads what they
// name. On loopback every flag is optional; anywhere else all three are
// required, and the error names those missing. It returns nil when no
// flag is set.
func (f *ServerFlags) Load(listen string) (*Server, error) {
	if _, _, err := net.SplitHostPort(listen); err != nil {
		return nil, fmt.Errorf("listen address %q: %v (want host:port)", listen, err)
	}
	switch {
	case f.CertFile != "" && f.KeyFile == "":
		return nil, fmt.Errorf("--%s is set without --%s: give the certificate's private key too", FlagTLSCert, FlagTLSKey)
	case f.KeyFile != "" && f.CertFile == "":
		return nil, fmt.Errorf("--%s is set without --%s: give the certificate of that key too", FlagTLSKey, FlagTLSCert)
	}
	if !IsLoopback(listen) {
		missing := missingFlags([][2]string{{FlagTLSCert, f.CertFile}, {FlagTLSKey, f.KeyFile}, {FlagTokenFile, f.TokenFile}})
		if missing != "" {
			return nil, fmt.Errorf("listen address %s is not a loopback address: serving other machines needs TLS and a join token, and %s; %s, then pass --%s DIR/%s --%s DIR/%s --%s DIR/%s (or listen on 127.0.0.1:PORT for this machine only)",
				listen, missing, createHint, FlagTLSCert, ServerCertFile, FlagTLSKey, ServerKeyFile, FlagTokenFile, TokenFile)
		}
	}
	if f.CertFile == "" && f.TokenFile == "" {
		return nil, nil
	}
	s := &Server{}
	var err error
	if f.CertFile != "" {
		if s.TLS, err = ServerTLS(f.CertFile, f.KeyFile); err != nil {
			return nil, err
		}
	}
	if f.TokenFile != "" {
		if s.Token, err = ReadToken(f.TokenFile); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// ClientFlags are the security flags of workers and ternctl.
type ClientFlags struct {
	CAFile, TokenFile string
}

// Register adds --tls-ca and --token-file to fs, each defaulting to its
// environment variable.
func (f *ClientFlags) Register(fs FlagSet) {
	fs.StringVar(&f.CAFile, FlagTLSCA, os.Getenv(EnvTLSCA), "PEM CA certificate to verify the coordinator's TLS certificate with, e.g. DIR/"+CACertFile+" written by ternctl certs create (env "+EnvTLSCA+"); required unless the coordinator is on loopback")
	fs.StringVar(&f.TokenFile, FlagTokenFile, os.Getenv(EnvTokenFile), "file holding the cluster's join token, e.g. DIR/"+TokenFile+" (env "+EnvTokenFile+"); required unless the coordinator is on loopback")
}

// Load checks the flags against the coordinator's address and loads what
// they name. A coordinator on loopback may be reached without either; any
// other needs both, and the error names those missing. It returns nil when
// no flag is set.
func (f *ClientFlags) Load(coordinator string) (*Client, error) {
	if _, _, err := net.SplitHostPort(coordinator); err != nil {
		return nil, fmt.Errorf("coordinator address %q: %v (want host:port)", coordinator, err)
	}
	if !IsLoopback(coordinator) {
		missing := missingFlags([][2]string{{FlagTLSCA, f.CAFile}, {FlagTokenFile, f.TokenFile}})
		if missing != "" {
			return nil, fmt.Errorf("coordinator %s is not a loopback address: reaching it needs TLS and the join token, and %s; pass the --%s (DIR/%s) and --%s (DIR/%s) that `ternctl certs create` made with the coordinator's certificate",
				coordinator, missing, FlagTLSCA, CACertFile, FlagTokenFile, TokenFile)
		}
	}
	if f.CAFile == "" && f.TokenFile == "" {
		return nil, nil
	}
	c := &Client{}
	var err error
	if f.CAFile != "" {
		if c.TLS, err = ClientTLS(f.CAFile); err != nil {
			return nil, err
		}
	}
	if f.TokenFile != "" {
		if c.Token, err = ReadToken(f.TokenFile); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// missingFlags lists the flags of pairs (name, value) whose value is
// empty, with their environment variables: "--a and --b are not set (env
// A, B)". "" when none is missing.
func missingFlags(pairs [][2]string) string {
	var names, envs []string
	for _, p := range pairs {
		if p[1] == "" {
			names = append(names, "--"+p[0])
			envs = append(envs, envOf[p[0]])
		}
	}
	switch len(names) {
	case 0:
		return ""
	case 1:
		return fmt.Sprintf("%s is not set (env %s)", names[0], envs[0])
	}
	return fmt.Sprintf("%s and %s are not set (env %s)", strings.Join(names[:len(names)-1], ", "), names[len(names)-1], strings.Join(envs, ", "))
}

var envOf = map[string]string{FlagTLSCert: EnvTLSCert, FlagTLSKey: EnvTLSKey, FlagTLSCA: EnvTLSCA, FlagTokenFile: EnvTokenFile}
