package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The files CreateBundle writes into its directory.
const (
	CACertFile     = "ca.crt"     // the CA certificate: --tls-ca of workers and ternctl
	CAKeyFile      = "ca.key"     // the CA's key (0600): keep it offline once the bundle is made
	ServerCertFile = "server.crt" // the coordinator's certificate: --tls-cert
	ServerKeyFile  = "server.key" // its key (0600): --tls-key
	TokenFile      = "token"      // the join token (0600): --token-file everywhere
)

// Bounds on BundleOptions.
const (
	DefaultValidity = 365 * 24 * time.Hour
	maxValidity     = 10 * 365 * 24 * time.Hour
	// clockSkew backdates certificates, so that a machine whose clock is a
	// little behind accepts them at once.
	clockSkew = time.Hour
)

// BundleOptions says what CreateBundle makes.
type BundleOptions struct {
	// Hosts are the DNS names and IP addresses clients reach the
	// coordinator by; they become the server certificate's subject
	// alternative names, and a client refuses a name not among them.
	Hosts []string
	// Validity is how long the certificates are valid (default
	// DefaultValidity, at most ten years).
	Validity time.Duration
	// Now is the start of validity (default time.Now()).
	Now time.Time
}

// CreateBundle writes a new CA, a server certificate and key for the
// coordinator signed by it, and a join token into dir (created with mode
// 0700 if missing). Keys and the token get mode 0600. It refuses to
// overwrite any of the files, so a bundle in use is never replaced by
// accident. It returns the paths written, in the order of the constants
// above.
func CreateBundle(dir string, o BundleOptions) ([]string, error) {
	if len(o.Hosts) == 0 {
		return nil, errors.New("no hosts: name the DNS names and IP addresses workers and ternctl use to reach the coordinator")
	}
	dns, ips, err := splitHosts(o.Hosts)
	if err != nil {
		return nil, err
	}
	if o.Validity == 0 {
		o.Validity = DefaultValidity
	}
	if o.Validity < 0 || o.Validity > maxValidity {
		return nil, fmt.Errorf("validity %v: want more than 0 and at most %d days", o.Validity, int(maxValidity/(24*time.Hour)))
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	names := []string{CACertFile, CAKeyFile, ServerCertFile, ServerKeyFile, TokenFile}
	paths := make([]string, len(names))
	for i, n := range names {
		paths[i] = filepath.Join(dir, n)
		if _, err := os.Lstat(paths[i]); err == nil {
			return nil, fmt.Errorf("%s exists: remove the old bundle or choose another directory (certificates in use are never overwritten)", paths[i])
		}
	}

	notBefore, notAfter := o.Now.Add(-clockSkew), o.Now.Add(o.Validity)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "tern cluster CA"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("sign CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate server key: %w", err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "tern coordinator"},
		DNSNames:     dns,
		IPAddresses:  ips,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("sign server certificate: %w", err)
	}
	caKeyDER, err := x509.MarshalPKCS8PrivateKey(caKey)
	if err != nil {
		return nil, fmt.Errorf("encode CA key: %w", err)
	}
	srvKeyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		return nil, fmt.Errorf("encode server key: %w", err)
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create bundle directory: %w", err)
	}
	contents := [][]byte{
		pemBlock("CERTIFICATE", caDER),
		pemBlock("PRIVATE KEY", caKeyDER),
		pemBlock("CERTIFICATE", srvDER),
		pemBlock("PRIVATE KEY", srvKeyDER),
		[]byte(NewToken() + "\n"),
	}
	modes := []os.FileMode{0o644, 0o600, 0o644, 0o600, 0o600}
	for i, p := range paths {
		if err := writeNew(p, contents[i], modes[i]); err != nil {
			return paths[:i], err
		}
	}
	return paths, nil
}

// splitHosts sorts hosts into DNS names and IP addresses, refusing what is
// neither.
func splitHosts(hosts []string) ([]string, []net.IP, error) {
	var dns []string
	var ips []net.IP
	seen := map[string]bool{}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" {
			return nil, nil, errors.New("an empty host name in the list: separate names with single commas")
		}
		if seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(strings.Trim(h, "[]")); ip != nil {
			ips = append(ips, ip)
			continue
		}
		if err := checkDNSName(h); err != nil {
			return nil, nil, err
		}
		dns = append(dns, strings.ToLower(h))
	}
	return dns, ips, nil
}

// checkDNSName accepts a host name of RFC 1123 labels, optionally with a
// leading wildcard label ("*.svc.example").
func checkDNSName(h string) error {
	name := strings.TrimPrefix(h, "*.")
	if len(name) > 253 {
		return fmt.Errorf("host %q: longer than 253 characters", h)
	}
	for _, label := range strings.Split(name, ".") {
		ok := label != "" && len(label) <= 63 && label[0] != '-' && label[len(label)-1] != '-'
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				ok = false
			}
		}
		if !ok {
			return fmt.Errorf("host %q is neither an IP address nor a DNS name (labels of letters, digits and inner '-', separated by '.')", h)
		}
	}
	return nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)) // never fails: crypto/rand
	return n.Add(n, big.NewInt(1))
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// writeNew writes a file that must not exist yet, with mode perm, and
// syncs it.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return f.Close()
}
