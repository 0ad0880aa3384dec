package main

// Examples shown by --help for the commands whose help lives here.

func (c *lsCmd) Help() string {
	return "Example:\n  imgcache ls --json | jq -r '.[] | select(.pinned) | .name'"
}

func (c *inspectCmd) Help() string {
	return "Example:\n  imgcache inspect capy-ubuntu-25.04-gcc15 --json | jq -r .digest"
}

func (c *rmCmd) Help() string {
	return "Example:\n  imgcache rm capy-ubuntu-24.04-gcc14 capy-ubuntu-24.04-clang18 && imgcache gc"
}

func (c *verifyCmd) Help() string {
	return "Examples:\n  imgcache verify                 # every entry\n  imgcache verify capy-ubuntu-25.04-gcc15\n  imgcache verify --repair        # rebuild a damaged manifest"
}

func (c *pinCmd) Help() string {
	return "Example:\n  imgcache pin capy-ubuntu-25.04-base   # never evicted by gc"
}

func (c *unpinCmd) Help() string {
	return "Example:\n  imgcache unpin capy-ubuntu-25.04-base"
}
