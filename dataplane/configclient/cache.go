package configclient

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"google.golang.org/protobuf/proto"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// cacheFile is the name of the last-known-good configuration in CacheDir.
const cacheFile = "config.pb"

// writeCache stores the applied configuration in the cache directory,
// atomically: a temporary file is written and synced, then renamed over the
// old one and the directory synced, so a crash leaves the old file or the
// new one, never a torn one. The file holds backend client keys, so it is
// private to the data plane's user.
func (c *Client) writeCache(version uint64) error {
	dir := c.cfg.CacheDir
	resp := &lbv1.StreamConfigResponse{Version: version, Full: true, Pools: make([]*lbv1.Pool, 0, len(c.pools))}
	for _, p := range c.pools {
		resp.Pools = append(resp.Pools, p)
	}
	sort.Slice(resp.Pools, func(i, j int) bool { return resp.Pools[i].GetName() < resp.Pools[j].GetName() })
	data, err := proto.Marshal(resp)
	if err != nil {
		return fmt.Errorf("encode cache: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create cache dir %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, cacheFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("create cache file in %s: %w", dir, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename this is a no-op
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	final := filepath.Join(dir, cacheFile)
	if err := os.Rename(tmp.Name(), final); err != nil {
		return fmt.Errorf("replace %s: %w", final, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// loadCache applies the cached configuration, if there is one. It reports
// whether it did.
func (c *Client) loadCache() (bool, error) {
	if c.cfg.CacheDir == "" {
		return false, nil
	}
	path := filepath.Join(c.cfg.CacheDir, cacheFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	resp := &lbv1.StreamConfigResponse{}
	if err := proto.Unmarshal(data, resp); err != nil {
		return false, fmt.Errorf("decode %s: %w", path, err)
	}
	if !resp.GetFull() {
		return false, fmt.Errorf("%s does not hold a full configuration", path)
	}
	if err := c.apply(resp, true); err != nil {
		return false, fmt.Errorf("apply %s: %w", path, err)
	}
	return true, nil
}
