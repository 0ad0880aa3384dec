package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/imgcache/imgcache/internal/testimage"
)

// The fleet tier against Debian's docker-registry (CNCF Distribution 2.8),
// started by scripts/registry.sh on a loopback port of its own for each
// test, with the real binary as several hosts (cache directories).

// startRegistry starts a registry and returns its address and storage
// directory; extra is added to the script's environment.
func startRegistry(t *testing.T, extra ...string) (addr, storage string) {
	t.Helper()
	if _, err := exec.LookPath("docker-registry"); err != nil {
		t.Fatalf("this test needs Debian's docker-registry (scripts/test.sh installs it): %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = l.Addr().String()
	l.Close()
	dir := t.TempDir()
	env := append([]string{"REGISTRY_ADDR=" + addr, "REGISTRY_DIR=" + dir}, extra...)
	cmd := exec.Command("../scripts/registry.sh")
	cmd.Env = append(os.Environ(), env...)
	if r := runCmd(t, cmd); r.code != 0 {
		t.Fatalf("scripts/registry.sh: %s", r)
	}
	t.Cleanup(func() {
		stop := exec.Command("../scripts/registry.sh", "stop")
		stop.Env = append(os.Environ(), env...)
		stop.Run()
	})
	return addr, filepath.Join(dir, "storage")
}

// regProxy sits between imgcache and a registry: hook may answer a request
// itself (returning true), alter may change a response.
type regProxy struct {
	requests atomic.Int64
	hook     func(w http.ResponseWriter, r *http.Request) bool
	alter    func(r *http.Response) error
}

func newProxy(t *testing.T, target string, p *regProxy) string {
	t.Helper()
	u, _ := url.Parse("http://" + target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(r *http.Response) error {
		if p.alter != nil {
			return p.alter(r)
		}
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		if p.hook != nil && p.hook(w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// pushed is one element of push --json.
type pushed struct {
	Name     string `json:"name"`
	Digest   string `json:"digest"`
	Blobs    int    `json:"blobs"`
	Uploaded int    `json:"uploaded"`
	Bytes    int64  `json:"bytes"`
	UpToDate bool   `json:"up_to_date"`
}

func pushJ(t *testing.T, dir string, args ...string) map[string]pushed {
	t.Helper()
	var out []pushed
	if err := json.Unmarshal([]byte(must(t, dir, append(args, "--json")...)), &out); err != nil {
		t.Fatal(err)
	}
	m := map[string]pushed{}
	for _, p := range out {
		m[p.Name] = p
	}
	return m
}

type pulled struct {
	UpToDate bool  `json:"up_to_date"`
	Fetched  int   `json:"fetched"`
	Bytes    int64 `json:"bytes"`
}

func pullJ(t *testing.T, dir string, args ...string) pulled {
	t.Helper()
	var out []pulled
	if err := json.Unmarshal([]byte(must(t, dir, append(args, "--json")...)), &out); err != nil || len(out) != 1 {
		t.Fatalf("pull --json: %v %v", out, err)
	}
	return out[0]
}

// TestRemoteFleet: host A pushes two images on one base; skopeo reads the
// manifests as OCI; host B (another zstd level, empty cache, empty
// daemon) gets one in one command: pulled, verified, loaded, it runs, it
// exports byte-identical; host C, whose compressor makes other bytes of
// the same layers, pushes the same content and uploads nothing; host D,
// holding the base, pulls only what it lacks.
func TestRemoteFleet(t *testing.T) {
	needDocker(t)
	addr, _ := startRegistry(t)
	R := addr + "/ci/imgcache"
	base := runnableBase(t, 4<<20)
	tarA, idA := buildVariant(t, base, "a.dat", 1<<20)
	tarB, idB := buildVariant(t, base, "b.dat", 2<<20)

	hostA := t.TempDir()
	must(t, hostA, "--remote", R, "--push", "put", "fleet-busybox-1-a", tarA) // write-back
	must(t, hostA, "put", "fleet-busybox-1-b", tarB)
	p := pushJ(t, hostA, "--remote", R, "push")
	if a := p["fleet-busybox-1-a"]; !a.UpToDate {
		t.Errorf("a was pushed by put --push; push says %+v", a)
	}
	if b := p["fleet-busybox-1-b"]; b.UpToDate || b.Blobs != 3 || b.Uploaded != 2 {
		t.Errorf("push of b: %+v; want 3 blobs, 2 uploaded (its skeleton and layer; the base is there)", b)
	}

	// A standard OCI client reads what we wrote.
	sk := exec.Command("skopeo", "inspect", "--tls-verify=false", "--raw", "docker://"+R+":fleet-busybox-1-b")
	r := runCmd(t, sk)
	var m struct {
		MediaType    string `json:"mediaType"`
		ArtifactType string `json:"artifactType"`
		Layers       []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"layers"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &m) != nil || m.MediaType != "application/vnd.oci.image.manifest.v1+json" ||
		m.ArtifactType != "application/vnd.imgcache.entry.v1" || len(m.Layers) != 3 {
		t.Fatalf("skopeo inspect --raw: %s; decoded %+v", r, m)
	}

	// Host B: nothing local, nothing in the daemon.
	removeImage(idA)
	removeImage(idB)
	removeImage(imageID(t, base))
	hostB := t.TempDir()
	var g getJSON
	if err := json.Unmarshal([]byte(must(t, hostB, "--remote", R, "--level", "3", "get", "fleet-busybox-1-b", "--json")), &g); err != nil {
		t.Fatal(err)
	}
	if !g.Loaded {
		t.Fatal("get on an empty host did not load")
	}
	out, err := execIn(g.Ref, "sh", "-c", "sha256sum /base.dat /b.dat | wc -l")
	if err != nil || strings.TrimSpace(out) != "2" {
		t.Fatalf("docker run of the pulled image: %q %v", out, err)
	}
	if hashFile(t, exportTo(t, hostB, "fleet-busybox-1-b")) != hashFile(t, tarB) {
		t.Error("export on host B differs from the tar host A put")
	}
	// A local hit does not contact the remote: a dead one does not matter.
	if r := imgcache(t, hostB, nil, "--remote", "127.0.0.1:1/ci/imgcache", "get", "fleet-busybox-1-b"); r.code != 0 {
		t.Fatalf("warm get with a dead remote: %s", r)
	}

	// Host C compresses at level 9: other bytes for the same layers, and
	// the registry still holds one copy of each.
	hostC := t.TempDir()
	must(t, hostC, "--level", "9", "put", "fleet-busybox-1-a2", tarA)
	if storedHash(t, hostA, tarA) == storedHash(t, hostC, tarA) {
		t.Fatal("hosts A and C stored identical bytes; the test needs different compressions")
	}
	if c := pushJ(t, hostC, "--remote", R, "push", "fleet-busybox-1-a2")["fleet-busybox-1-a2"]; c.Uploaded != 0 || c.Bytes != 0 || c.Blobs != 3 {
		t.Errorf("host C pushing content the registry holds (other compression): %+v; want 0 uploaded", c)
	}

	// Host D holds a (so the base): pulling b fetches b's layer and skeleton only.
	hostD := t.TempDir()
	must(t, hostD, "put", "fleet-busybox-1-a", tarA)
	if d := pullJ(t, hostD, "--remote", R, "pull", "fleet-busybox-1-b"); d.Fetched != 2 || d.Bytes > 3<<20 {
		t.Errorf("pull with the base local: %+v; want 2 blobs (layer, skeleton), not the 4 MiB base", d)
	}
	if d := pullJ(t, hostD, "--remote", R, "pull", "fleet-busybox-1-b"); !d.UpToDate || d.Fetched != 0 {
		t.Errorf("second pull: %+v; want up to date", d)
	}
	must(t, hostD, "verify")

	// ls --remote lists the three names.
	var ls []struct {
		Name   string `json:"name"`
		Digest string `json:"digest"`
	}
	if err := json.Unmarshal([]byte(must(t, hostD, "--remote", R, "ls", "--remote", "--json")), &ls); err != nil || len(ls) != 3 {
		t.Fatalf("ls --remote: %v %v", ls, err)
	}
}

// storedHash is the sha256 of the stored (compressed) blob of the first
// layer of tar's entry in dir: what differs between compressors.
func storedHash(t *testing.T, dir, tarPath string) string {
	t.Helper()
	var found string
	filepath.Walk(filepath.Join(dir, "layers", "blobs"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Size() > 1<<20 && found == "" {
			found = hashFile(t, p)
		}
		return nil
	})
	if found == "" {
		t.Fatalf("no large layer blob in %s", dir)
	}
	return found
}

// TestRemoteIntegrity: a registry that sends a blob other than its digest
// says: the pull fails with exit 4 naming the registry and the blob,
// nothing is published, nothing loaded.
func TestRemoteIntegrity(t *testing.T) {
	needDocker(t)
	addr, _ := startRegistry(t)
	tarP, img := genImage(t, testimage.Options{Layers: 2, FileSize: 1 << 19})
	hostA := t.TempDir()
	must(t, hostA, "put", "bad-deb-12-x", tarP)
	must(t, hostA, "--remote", addr+"/ci/imgcache", "push")

	var victim string // the largest blob of the entry
	r := runCmd(t, exec.Command("skopeo", "inspect", "--tls-verify=false", "--raw", "docker://"+addr+"/ci/imgcache:bad-deb-12-x"))
	var m struct {
		Layers []struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		} `json:"layers"`
	}
	if json.Unmarshal([]byte(r.stdout), &m); len(m.Layers) == 0 {
		t.Fatalf("skopeo: %s", r)
	}
	var size int64
	for _, l := range m.Layers {
		if l.Size > size {
			victim, size = l.Digest, l.Size
		}
	}
	p := &regProxy{alter: func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet && strings.HasSuffix(resp.Request.URL.Path, "/blobs/"+victim) && resp.StatusCode == 200 {
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			b[len(b)/2] ^= 0x40
			resp.Body = io.NopCloser(bytes.NewReader(b))
		}
		return nil
	}}
	R := newProxy(t, addr, p) + "/ci/imgcache"
	removeImage(img.ImageID.String())
	hostB := t.TempDir()
	for _, args := range [][]string{{"pull", "bad-deb-12-x"}, {"get", "bad-deb-12-x"}} {
		r := imgcache(t, hostB, nil, append([]string{"--remote", R}, args...)...)
		if r.code != 4 || !strings.Contains(r.stderr, "integrity") || !strings.Contains(r.stderr, victim) || !strings.Contains(r.stderr, R) {
			t.Fatalf("%v from a registry sending a damaged blob: want exit 4 naming the integrity failure, %s and %s; got %s", args, victim, R, r)
		}
	}
	if out := must(t, hostB, "ls", "--json"); strings.Contains(out, "bad-deb-12-x") {
		t.Errorf("the damaged pull published an entry: %s", out)
	}
	if inDaemon(t, img.ImageID.String()) {
		t.Error("the damaged pull loaded an image")
	}
	if r := imgcache(t, hostB, nil, "verify"); r.code != 0 {
		t.Errorf("verify after the refused pull: %s", r)
	}
}

// TestRemoteNamesMove: a name moved by another host is seen only when
// asked (pull, get --refresh); a push never silently replaces a name
// another host moved (exit 13, --force does); the digest tag keeps the
// old content reachable; rm --remote removes the name only.
func TestRemoteNamesMove(t *testing.T) {
	needDocker(t)
	addr, _ := startRegistry(t)
	R := addr + "/ci/imgcache"
	v1, i1 := genImage(t, testimage.Options{Layers: 1, FileSize: 16 << 10})
	v2, i2 := genImage(t, testimage.Options{Layers: 1, FileSize: 16 << 10})
	v3, i3 := genImage(t, testimage.Options{Layers: 1, FileSize: 16 << 10})
	const n = "move-deb-12-x"
	hostA, hostB := t.TempDir(), t.TempDir()
	d1 := must(t, hostA, "put", n, v1)
	must(t, hostA, "--remote", R, "push", n)
	must(t, hostB, "--remote", R, "pull", n)
	d2 := must(t, hostA, "put", n, v2)
	must(t, hostA, "--remote", R, "push", n) // A saw d1 there: it moves its own name

	// B still uses d1 until asked.
	if g := getJ(t, hostB, n); g.Entry.Digest != d1 {
		t.Fatalf("B's get without a remote: %s, want %s", g.Entry.Digest, d1)
	}
	var g getJSON
	json.Unmarshal([]byte(must(t, hostB, "--remote", R, "get", n, "--json")), &g)
	if g.Entry.Digest != d1 {
		t.Errorf("get without --refresh followed the moved name: %s", g.Entry.Digest)
	}
	json.Unmarshal([]byte(must(t, hostB, "--remote", R, "get", "--refresh", n, "--json")), &g)
	if g.Entry.Digest != d2 {
		t.Errorf("get --refresh: %s, want the moved name's %s", g.Entry.Digest, d2)
	}
	// A configured interval checks on its own.
	must(t, hostA, "put", n, v1)
	must(t, hostA, "--remote", R, "push", n)
	json.Unmarshal([]byte(must(t, hostB, "--remote", R, "--remote-refresh", "1ms", "get", n, "--json")), &g)
	if g.Entry.Digest != d1 {
		t.Errorf("get with --remote-refresh: %s, want %s", g.Entry.Digest, d1)
	}

	// C last saw nothing there; its push of other content is refused.
	hostC := t.TempDir()
	d3 := must(t, hostC, "put", n, v3)
	r := imgcache(t, hostC, nil, "--remote", R, "push", n)
	if r.code != 13 || !strings.Contains(r.stderr, d1) || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("push over a name another host moved: want exit 13 naming %s and --force; got %s", d1, r)
	}
	must(t, hostC, "--remote", R, "push", "--force", n)
	var ls []struct{ Name, Digest string }
	json.Unmarshal([]byte(must(t, hostC, "--remote", R, "ls", "--remote", "--json")), &ls)
	if len(ls) != 1 || ls[0].Digest != d3 {
		t.Errorf("ls --remote after push --force: %+v, want %s", ls, d3)
	}
	// The content the name left is still there by digest.
	for _, d := range []string{d1, d2} {
		tag := "_entry_sha256_" + strings.TrimPrefix(d, "sha256:")
		if r := runCmd(t, exec.Command("skopeo", "inspect", "--tls-verify=false", "--raw", "docker://"+R+":"+tag)); r.code != 0 {
			t.Errorf("digest tag %s: %s", tag, r)
		}
	}
	// rm --remote removes the name, not the digest's manifest.
	must(t, hostC, "--remote", R, "rm", "--remote", n)
	if out := must(t, hostC, "--remote", R, "ls", "--remote", "--json"); strings.Contains(out, n) {
		t.Errorf("ls --remote after rm --remote: %s", out)
	}
	tag := "_entry_sha256_" + strings.TrimPrefix(d3, "sha256:")
	if r := runCmd(t, exec.Command("skopeo", "inspect", "--tls-verify=false", "--raw", "docker://"+R+":"+tag)); r.code != 0 {
		t.Errorf("rm --remote removed the digest tag too: %s", r)
	}
	if r := imgcache(t, hostC, nil, "--remote", R, "rm", "--remote", n); r.code != 3 {
		t.Errorf("rm --remote of a missing name: want exit 3, got %s", r)
	}
	for _, i := range []testimage.Result{i1, i2, i3} {
		removeImage(i.ImageID.String())
	}
}

// TestRemoteUnavailable: a registry that is down or failing is exit 11
// naming it when the entry is needed, a warning when it is not (a local
// hit, a write-back), and exit 11 after a write-back only with
// --strict-remote; a stats counter counts the failures.
func TestRemoteUnavailable(t *testing.T) {
	needDocker(t)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String() + "/ci/imgcache"
	l.Close()
	tarP, _ := genImage(t, testimage.Options{Layers: 1, FileSize: 16 << 10})
	dir := t.TempDir()

	start := time.Now()
	r := imgcache(t, dir, nil, "--remote", dead, "get", "gone-deb-12-x")
	if r.code != 11 || !strings.Contains(r.stderr, dead) {
		t.Fatalf("get of a name missing locally, remote down: want exit 11 naming %s; got %s", dead, r)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("a refused connection took %v to report", d)
	}
	r = imgcache(t, dir, nil, "--remote", dead, "--push", "put", "gone-deb-12-x", tarP)
	if r.code != 0 || !strings.Contains(r.stderr, "push to the remote failed") {
		t.Fatalf("put --push with the remote down: want exit 0 and a warning; got %s", r)
	}
	r = imgcache(t, dir, nil, "--remote", dead, "--push", "--strict-remote", "put", "gone-deb-12-x", tarP)
	if r.code != 11 || strings.TrimSpace(r.stdout) == "" {
		t.Fatalf("put --push --strict-remote with the remote down: want the digest and exit 11; got %s", r)
	}
	if r := imgcache(t, dir, nil, "--remote", dead, "get", "--refresh", "gone-deb-12-x"); r.code != 0 || !strings.Contains(r.stderr, "using the local entry") {
		t.Fatalf("get --refresh with the remote down and a local entry: want exit 0 and a warning; got %s", r)
	}
	var st struct {
		Counters struct {
			RemoteFailures int `json:"remote_failures"`
		} `json:"counters"`
	}
	json.Unmarshal([]byte(must(t, dir, "stats", "--json", "--no-daemon")), &st)
	if st.Counters.RemoteFailures < 2 {
		t.Errorf("stats counted %d remote failures, want at least 2", st.Counters.RemoteFailures)
	}

	// A registry answering 503: retried with backoff, then exit 11.
	addr, _ := startRegistry(t)
	p := &regProxy{hook: func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/v2/" {
			return false
		}
		http.Error(w, `{"errors":[{"code":"UNAVAILABLE","message":"maintenance"}]}`, http.StatusServiceUnavailable)
		return true
	}}
	R := newProxy(t, addr, p) + "/ci/imgcache"
	r = imgcache(t, t.TempDir(), nil, "--remote", R, "pull", "gone-deb-12-x")
	if r.code != 11 || !strings.Contains(r.stderr, "503") {
		t.Fatalf("pull from a registry answering 503: want exit 11; got %s", r)
	}
	if n := p.requests.Load(); n < 3 {
		t.Errorf("the 503 was tried %d times, want retries", n)
	}
}

// TestRemoteAuth: a registry with TLS (a self-signed certificate) and
// basic auth: its certificate is refused without --remote-ca; no
// credentials or wrong ones are exit 12 saying `docker login`; the
// credentials docker stores in config.json are used.
func TestRemoteAuth(t *testing.T) {
	needDocker(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	htp := filepath.Join(tmp, "htpasswd")
	os.WriteFile(htp, []byte("ci:"+string(hash)+"\n"), 0o644)
	cert, key := selfSigned(t, tmp)
	addr, _ := startRegistry(t, "REGISTRY_HTPASSWD="+htp, "REGISTRY_TLS_CERT="+cert, "REGISTRY_TLS_KEY="+key)
	R := addr + "/ci/imgcache"
	tarP, _ := genImage(t, testimage.Options{Layers: 1, FileSize: 16 << 10})
	dir := t.TempDir()
	must(t, dir, "put", "auth-deb-12-x", tarP)
	dockerConfig := func(user, pass string) string {
		d := t.TempDir()
		cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, addr, base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
		os.WriteFile(filepath.Join(d, "config.json"), []byte(cfg), 0o600)
		return "DOCKER_CONFIG=" + d
	}
	good := []string{dockerConfig("ci", "s3cret")}
	if r := imgcache(t, dir, good, "--remote", R, "push"); r.code != 11 || !strings.Contains(r.stderr, "--remote-ca") {
		t.Fatalf("push to a registry whose certificate is not trusted: want exit 11 naming --remote-ca; got %s", r)
	}
	for _, env := range [][]string{{"DOCKER_CONFIG=" + t.TempDir()}, {dockerConfig("ci", "wrong")}} {
		r := imgcache(t, dir, env, "--remote", R, "--remote-ca", cert, "push")
		if r.code != 12 || !strings.Contains(r.stderr, "docker login "+addr) {
			t.Fatalf("push with %v: want exit 12 saying docker login %s; got %s", env, addr, r)
		}
	}
	if r := imgcache(t, dir, good, "--remote", R, "--remote-ca", cert, "push"); r.code != 0 {
		t.Fatalf("push with docker's stored credentials: %s", r)
	}
	if r := imgcache(t, t.TempDir(), good, "--remote", R, "--remote-ca", cert, "pull", "auth-deb-12-x"); r.code != 0 {
		t.Fatalf("pull with docker's stored credentials: %s", r)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "imgcache e2e registry"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return cert, key
}

// TestRemoteBlobVanished: the registry said it held a blob (a HEAD
// answered 200) but its gc had removed it: the manifest PUT gets
// BLOB_UNKNOWN, the push uploads the blobs again and succeeds, and
// another host pulls the entry complete.
func TestRemoteBlobVanished(t *testing.T) {
	needDocker(t)
	addr, storage := startRegistry(t)
	tarP, _ := genImage(t, testimage.Options{Layers: 1, FileSize: 1 << 19})
	hostA := t.TempDir()
	must(t, hostA, "put", "gone-deb-12-x", tarP)
	must(t, hostA, "--remote", addr+"/ci/imgcache", "push")
	must(t, hostA, "--remote", addr+"/ci/imgcache", "rm", "--remote", "gone-deb-12-x")
	// The registry's gc (simulated): every blob's data goes, the blob
	// tags stay.
	blobs, _ := filepath.Glob(filepath.Join(storage, "docker", "registry", "v2", "blobs", "sha256", "*", "*"))
	var lied []string
	for _, b := range blobs {
		if fi, err := os.Stat(filepath.Join(b, "data")); err == nil && fi.Size() > 4<<10 {
			os.RemoveAll(b)
			lied = append(lied, filepath.Base(b))
		}
	}
	if len(lied) == 0 {
		t.Fatal("no blob data found to remove")
	}
	// A proxy answers HEAD for those as the registry did before its gc.
	p := &regProxy{hook: func(w http.ResponseWriter, r *http.Request) bool {
		for _, h := range lied {
			if r.Method == http.MethodHead && strings.HasSuffix(r.URL.Path, "/blobs/sha256:"+h) {
				w.Header().Set("Docker-Content-Digest", "sha256:"+h)
				w.Header().Set("Content-Length", "1")
				w.WriteHeader(http.StatusOK)
				return true
			}
		}
		return false
	}}
	R := newProxy(t, addr, p) + "/ci/imgcache"
	r := imgcache(t, hostA, nil, "--remote", R, "push", "gone-deb-12-x")
	if r.code != 0 || !strings.Contains(r.stderr, "lacks a blob") {
		t.Fatalf("push after the registry lost blobs it claims: want exit 0 after uploading again; got %s", r)
	}
	hostB := t.TempDir()
	if r := imgcache(t, hostB, nil, "--remote", addr+"/ci/imgcache", "pull", "gone-deb-12-x"); r.code != 0 {
		t.Fatalf("pull after the re-upload: %s", r)
	}
	if hashFile(t, exportTo(t, hostB, "gone-deb-12-x")) != hashFile(t, tarP) {
		t.Error("the pulled entry exports other bytes")
	}
}

// TestRemoteManyHosts: four processes of one host get the same entry at
// once, missing it locally: each blob is downloaded once, the image loaded
// once. Two hosts pushing different content under one name at once: one
// wins, the other is refused (exit 13), and the remote entry is complete.
func TestRemoteManyHosts(t *testing.T) {
	needDocker(t)
	addr, _ := startRegistry(t)
	tarP, img := genImage(t, testimage.Options{Layers: 3, FileSize: 256 << 10})
	const n = "many-deb-12-x"
	hostA := t.TempDir()
	must(t, hostA, "put", n, tarP)
	must(t, hostA, "--remote", addr+"/ci/imgcache", "push")
	removeImage(img.ImageID.String())

	var mu sync.Mutex
	gets := map[string]int{}
	p := &regProxy{hook: func(w http.ResponseWriter, r *http.Request) bool {
		if i := strings.Index(r.URL.Path, "/blobs/sha256:"); i >= 0 && r.Method == http.MethodGet {
			mu.Lock()
			gets[r.URL.Path[i+len("/blobs/"):]]++
			mu.Unlock()
		}
		return false
	}}
	R := newProxy(t, addr, p) + "/ci/imgcache"
	hostB := t.TempDir()
	since := eventWindowStart()
	var wg sync.WaitGroup
	results := make([]result, 4)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = imgcache(t, hostB, nil, "--remote", R, "get", n)
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 || !strings.HasPrefix(r.stdout, "imgcache/"+n+":") {
			t.Fatalf("get %d: %s", i, r)
		}
	}
	if l := loadsBetween(t, img.ImageID.String(), since, time.Now()); l != 1 {
		t.Errorf("4 concurrent gets loaded the image %d times, want 1", l)
	}
	var stored []ocispecLayer
	json.Unmarshal([]byte(runCmd(t, exec.Command("skopeo", "inspect", "--tls-verify=false", "--raw", "docker://"+addr+"/ci/imgcache:"+n)).stdout), &struct {
		Layers *[]ocispecLayer `json:"layers"`
	}{&stored})
	if len(stored) == 0 {
		t.Fatal("no layers in the pushed manifest")
	}
	mu.Lock()
	for _, l := range stored {
		if gets[l.Digest] != 1 {
			t.Errorf("blob %s was downloaded %d times by 4 concurrent gets, want 1", l.Digest, gets[l.Digest])
		}
	}
	mu.Unlock()

	// Two hosts, one name, different content, at once.
	v1, _ := genImage(t, testimage.Options{Layers: 1, FileSize: 512 << 10})
	v2, _ := genImage(t, testimage.Options{Layers: 1, FileSize: 512 << 10})
	const m = "race-deb-12-x"
	h1, h2 := t.TempDir(), t.TempDir()
	d := map[string]string{h1: must(t, h1, "put", m, v1), h2: must(t, h2, "put", m, v2)}
	res := map[string]result{}
	for _, h := range []string{h1, h2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := imgcache(t, h, nil, "--remote", addr+"/ci/imgcache", "push", m)
			mu.Lock()
			res[h] = r
			mu.Unlock()
		}()
	}
	wg.Wait()
	var winner string
	for h, r := range res {
		switch r.code {
		case 0:
			if winner != "" {
				t.Fatalf("both concurrent pushes of %s reported success:\n%s\n%s", m, res[h1], res[h2])
			}
			winner = h
		case 13:
			if !strings.Contains(r.stderr, "another host") {
				t.Errorf("the refused push does not say why: %s", r)
			}
		default:
			t.Fatalf("concurrent push: %s", r)
		}
	}
	if winner == "" {
		t.Fatalf("no push won:\n%s\n%s", res[h1], res[h2])
	}
	hostC := t.TempDir()
	if got := must(t, hostC, "--remote", addr+"/ci/imgcache", "pull", m); !strings.Contains(got, d[winner]) {
		t.Errorf("the name holds %q, want the winner's %s", got, d[winner])
	}
	must(t, hostC, "verify")
}

type ocispecLayer struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// TestRemotePushKilled: a push killed with SIGKILL while it uploads leaves
// no manifest (nothing references a blob the registry lacks); the next
// push completes and another host pulls the entry.
func TestRemotePushKilled(t *testing.T) {
	needDocker(t)
	addr, _ := startRegistry(t)
	tarP, _ := genImage(t, testimage.Options{Layers: 2, FileSize: 2 << 20})
	const n = "kill-deb-12-x"
	dir := t.TempDir()
	must(t, dir, "put", n, tarP)
	uploading := make(chan struct{}, 16)
	var hang atomic.Bool
	hang.Store(true)
	p := &regProxy{hook: func(w http.ResponseWriter, r *http.Request) bool {
		if hang.Load() && r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/") {
			uploading <- struct{}{}
			time.Sleep(5 * time.Second) // the upload hangs: the push is killed meanwhile
		}
		return false
	}}
	R := newProxy(t, addr, p) + "/ci/imgcache"
	cmd := exec.Command(bin, "--dir", dir, "--remote", R, "push", n)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-uploading:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the push never uploaded")
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if r := runCmd(t, exec.Command("skopeo", "inspect", "--tls-verify=false", "--raw", "docker://"+addr+"/ci/imgcache:"+n)); r.code == 0 {
		t.Fatalf("a killed push left a manifest: %s", r.stdout)
	}
	if out := must(t, dir, "--remote", addr+"/ci/imgcache", "ls", "--remote", "--json"); strings.Contains(out, n) {
		t.Fatalf("ls --remote lists the killed push: %s", out)
	}
	hang.Store(false)
	must(t, dir, "--remote", R, "push", n)
	other := t.TempDir()
	must(t, other, "--remote", addr+"/ci/imgcache", "pull", n)
	if hashFile(t, exportTo(t, other, n)) != hashFile(t, tarP) {
		t.Error("the entry pulled after the second push exports other bytes")
	}
}

// TestRemoteStorageTamperedAndDown: a blob altered in the registry's
// storage directory is refused; with the registry stopped, get --build
// builds (a dead cache is a miss with a warning), and nothing
// half-written stays.
func TestRemoteStorageTamperedAndDown(t *testing.T) {
	needDocker(t)
	addr, storage := startRegistry(t)
	R := addr + "/ci/imgcache"
	tarP, img := genImage(t, testimage.Options{Layers: 1, FileSize: 1 << 20})
	const n = "tamper-deb-12-x"
	hostA := t.TempDir()
	must(t, hostA, "put", n, tarP)
	must(t, hostA, "--remote", R, "push")
	removeImage(img.ImageID.String())
	var biggest string
	var size int64
	filepath.Walk(filepath.Join(storage, "docker", "registry", "v2", "blobs"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Name() == "data" && fi.Size() > size {
			biggest, size = p, fi.Size()
		}
		return nil
	})
	flipMiddle(t, biggest)
	hostB := t.TempDir()
	r := imgcache(t, hostB, nil, "--remote", R, "get", n)
	if r.code != 4 || !strings.Contains(r.stderr, filepath.Base(filepath.Dir(biggest))) {
		t.Fatalf("get of an entry whose blob was altered in the registry's storage: want exit 4 naming the blob; got %s", r)
	}
	if inDaemon(t, img.ImageID.String()) {
		t.Fatal("the altered entry was loaded")
	}

	// The registry stops: get --build builds the name from a local base.
	stop := exec.Command("../scripts/registry.sh", "stop")
	stop.Env = append(os.Environ(), "REGISTRY_DIR="+filepath.Dir(storage))
	stop.Run()
	const base, built = "fleetb-ubuntu-25.04-base", "fleetb-ubuntu-25.04-gcc15"
	putBase(t, hostB, base)
	removeBuilt(t, hostB)
	ctxDir := buildContext(t, map[string]string{"gcc.txt": "gcc15\n"})
	r = imgcache(t, hostB, nil, "--remote", R, "get", "--build", built, ctxDir)
	if r.code != 0 || buildsStarted(r.stderr) == 0 || !strings.Contains(r.stderr, "remote cannot be used") {
		t.Fatalf("get --build with the registry down: want a build and a warning; got %s", r)
	}
	if r := imgcache(t, hostB, nil, "--remote", R, "get", n); r.code != 11 {
		t.Fatalf("get of a name only the stopped registry had: want exit 11; got %s", r)
	}
	if out := must(t, hostB, "ls", "--json"); strings.Contains(out, n) {
		t.Errorf("a refused pull left an entry: %s", out)
	}
	must(t, hostB, "verify")
}

// TestRemoteTokenExpires: a registry behind bearer-token auth (a token
// service that hands out tokens valid for 2 s), whose token expires while
// a long blob upload is in flight: the upload is refused (401), imgcache
// authenticates again and uploads the blob anew, the push succeeds, and
// another host pulls the entry through the same auth.
func TestRemoteTokenExpires(t *testing.T) {
	addr, _ := startRegistry(t)
	const ttl = 2 * time.Second
	var (
		mu     sync.Mutex
		issued = map[string]time.Time{}
		n      int
		self   string
		slow   atomic.Bool
		denied atomic.Int32
	)
	slow.Store(true)
	p := &regProxy{hook: func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/token" {
			mu.Lock()
			n++
			tok := fmt.Sprintf("tok-%d", n)
			issued[tok] = time.Now()
			mu.Unlock()
			fmt.Fprintf(w, `{"token":%q,"expires_in":%d}`, tok, int(ttl.Seconds()))
			return true
		}
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/") && slow.CompareAndSwap(true, false) {
			io.Copy(io.Discard, r.Body) // a long upload: its token expires meanwhile
			time.Sleep(ttl + 500*time.Millisecond)
		}
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		mu.Lock()
		at, ok := issued[tok]
		mu.Unlock()
		if !ok || time.Since(at) > ttl {
			if ok {
				denied.Add(1)
			}
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="imgcache-test",scope="repository:ci/imgcache:pull,push"`, self))
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"token expired"}]}`)
			return true
		}
		r.Header.Del("Authorization")
		return false
	}}
	self = newProxy(t, addr, p)
	R := self + "/ci/imgcache"
	tarP, _ := genImage(t, testimage.Options{Layers: 1, FileSize: 2 << 20})
	const name = "token-deb-12-x"
	dir := t.TempDir()
	must(t, dir, "put", name, tarP)
	r := imgcache(t, dir, nil, "--remote", R, "push", name)
	if r.code != 0 {
		t.Fatalf("push whose token expired during an upload: %s", r)
	}
	if denied.Load() == 0 || slow.Load() {
		t.Fatalf("no expired token was met (denied %d): the test did not test", denied.Load())
	}
	if !strings.Contains(r.stderr, "uploading it again") {
		t.Errorf("the push did not say it uploaded again: %s", r)
	}
	other := t.TempDir()
	must(t, other, "--remote", R, "pull", name)
	if hashFile(t, exportTo(t, other, name)) != hashFile(t, tarP) {
		t.Error("the pulled entry exports other bytes")
	}
}
