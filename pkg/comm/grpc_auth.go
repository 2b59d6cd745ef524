package comm

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"math/big"
	"time"

	"github.com/ternml/tern/pkg/auth"
)

// Authentication of the gRPC transport rests on one shared secret, the job
// token, that every rank of a job is given by whoever starts it:
//
//   - Hello proof (always): each side of a stream proves it holds the token
//     with an HMAC-SHA256 over the peer's fresh nonce, its own nonce and its
//     identity (role, job id, rank, world size), under a key derived from
//     the token with HKDF-SHA256 (RFC 5869). The token never crosses the
//     wire and a recorded proof is useless against a new nonce.
//   - TLS (required whenever an address is not loopback): a CA key is derived
//     from the token with HKDF-SHA256, so every rank computes the same CA
//     certificate without anyone distributing it. Each process generates
//     its own leaf key and signs its certificate with that CA; both ends
//     verify the other's certificate against it (mutual TLS 1.3). Without
//     the token no one can present a valid certificate, and the stream is
//     encrypted.
//
// Since the CA key is a function of the token, the token must be random and
// long: MinTokenBytes bytes at least (e.g. 32 hex digits from a CSPRNG).

// MinTokenBytes is the shortest job token accepted.
const MinTokenBytes = 16

const (
	nonceBytes = 32
	// peerServerName is the name in every leaf certificate and the name a
	// dialer expects: peers are identified by the CA and the hello, not by
	// host names, which NAT and containers make unreliable.
	peerServerName = "tern-peer"
	helloKeyInfo   = "tern peer hello v1"
	caKeyInfo      = "tern peer ca v1"
	roleDialer     = 'd'
	roleAcceptor   = 'a'
	leafLifetime   = 365 * 24 * time.Hour
)

// newNonce returns a fresh random challenge.
func newNonce() []byte {
	b := make([]byte, nonceBytes)
	rand.Read(b) // never returns an error (crypto/rand, Go 1.24+)
	return b
}

// helloKey derives the HMAC key for hello proofs from the token.
func helloKey(token string) ([]byte, error) {
	return hkdf.Key(sha256.New, []byte(token), nil, helloKeyInfo, sha256.Size)
}

// helloProof is the MAC a rank in role sends: it covers who it claims to be,
// the peer's challenge and its own nonce.
func helloProof(key []byte, role byte, job string, rank, world uint32, challenge, nonce []byte) []byte {
	msg := make([]byte, 0, 1+binary.MaxVarintLen64+len(job)+8+2*nonceBytes)
	msg = append(msg, role)
	msg = binary.AppendUvarint(msg, uint64(len(job)))
	msg = append(msg, job...)
	msg = binary.BigEndian.AppendUint32(msg, rank)
	msg = binary.BigEndian.AppendUint32(msg, world)
	msg = append(msg, challenge...)
	msg = append(msg, nonce...)
	mac := hmac.New(sha256.New, key)
	mac.Write(msg)
	return mac.Sum(nil)
}

// peerTLS returns the server and client TLS configurations of one process:
// a fresh leaf certificate signed by the CA derived from token, trusting only
// that CA, on both ends.
func peerTLS(token, job string, rank int) (server, client *tls.Config, err error) {
	caCert, caKey, err := tokenCA(token)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)

	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate leaf key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("leaf serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: fmt.Sprintf("tern job %s rank %d", job, rank)},
		DNSNames:     []string{peerServerName},
		// An hour of slack for clocks that disagree between machines.
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(leafLifetime),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, pub, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("sign leaf certificate: %w", err)
	}
	leaf := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	server = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{leaf},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}
	client = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{leaf},
		RootCAs:      pool,
		ServerName:   peerServerName,
	}
	return server, client, nil
}

// tokenCA derives the job's CA key from the token and builds its self-signed
// certificate. Every field is fixed and Ed25519 signatures are
// deterministic, so every process builds the same certificate.
func tokenCA(token string) (*x509.Certificate, ed25519.PrivateKey, error) {
	seed, err := hkdf.Key(sha256.New, []byte(token), nil, caKeyInfo, ed25519.SeedSize)
	if err != nil {
		return nil, nil, fmt.Errorf("derive CA key: %w", err)
	}
	key := ed25519.NewKeyFromSeed(seed)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tern job CA"},
		NotBefore:             time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("build CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return cert, key, nil
}

// isLoopback reports whether a host:port address names this machine only,
// by the rule the control plane uses too.
func isLoopback(addr string) bool { return auth.IsLoopback(addr) }
