package dockerbridge

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// binfmtDir is where Linux lists its binfmt_misc handlers.
const binfmtDir = "/proc/sys/fs/binfmt_misc"

// CanRun reports whether the engine can run images built for goos/goarch:
// its own platform, or, for an engine on this host, another architecture
// that an enabled binfmt_misc handler emulates (qemu-<arch>, as Debian's
// qemu-user-static and binfmt-support register, or tonistiigi/binfmt).
// why says what is missing when it cannot.
func (b *Bridge) CanRun(ctx context.Context, goos, goarch string) (ok bool, why string, err error) {
	dos, darch, err := b.Platform(ctx)
	if err != nil {
		return false, "", err
	}
	switch {
	case goos == dos && goarch == darch:
		return true, "", nil
	case goos != dos:
		return false, fmt.Sprintf("the engine runs %s images, not %s", dos, goos), nil
	case !strings.HasPrefix(b.host, "unix://"):
		return false, fmt.Sprintf("the engine at %s is not on this host: whether it emulates %s cannot be checked here", b.host, goarch), nil
	}
	return binfmtHandler(binfmtDir, goarch)
}

// binfmtHandler looks in dir for an enabled qemu handler for goarch.
func binfmtHandler(dir, goarch string) (bool, string, error) {
	name := "qemu-" + qemuArch(goarch)
	data, err := os.ReadFile(filepath.Join(dir, name))
	switch {
	case err != nil && os.IsNotExist(err):
		if _, derr := os.Stat(filepath.Join(dir, "status")); derr != nil {
			return false, fmt.Sprintf("binfmt_misc is not mounted at %s (mount -t binfmt_misc binfmt_misc %s), so nothing emulates %s", dir, dir, goarch), nil
		}
		return false, fmt.Sprintf("no binfmt_misc handler %s emulates %s on this host (apt-get install qemu-user-static binfmt-support)", filepath.Join(dir, name), goarch), nil
	case err != nil:
		return false, "", fmt.Errorf("binfmt_misc handler %s: %w", filepath.Join(dir, name), err)
	case !bytes.HasPrefix(data, []byte("enabled")):
		return false, fmt.Sprintf("the binfmt_misc handler %s is disabled", filepath.Join(dir, name)), nil
	}
	return true, "", nil
}

// qemuArch is qemu's name for a Go/OCI architecture.
func qemuArch(goarch string) string {
	switch goarch {
	case "amd64":
		return "x86_64"
	case "386":
		return "i386"
	case "arm64":
		return "aarch64"
	case "mips64le":
		return "mips64el"
	case "mipsle":
		return "mipsel"
	case "loong64":
		return "loongarch64"
	}
	return goarch // arm, riscv64, ppc64le, s390x, mips64, mips
}
