"""A git client that is not git: libgit2 (through pygit2), which fetches over protocol v0.

tests/libgit2.rs runs it (from the virtual environment tests/clients/setup.sh makes) and
checks what it leaves with git. One step per run:

    pygit2_client.py clone URL DEST          clone with a work tree (origin/*, tags, checkout)
    pygit2_client.py clone-bare URL DEST     bare clone
    pygit2_client.py mirror URL DEST         bare repository fetching +refs/*:refs/*
    pygit2_client.py fetch DEST              fetch origin with its configured refspecs
    pygit2_client.py fetch-tags DEST         fetch origin's +refs/tags/*:refs/tags/*

It prints `libgit2 <version>` and `received_objects <n>` (objects in the pack it got).
Any error ends it with a message and exit status 1.
"""

import sys

import pygit2


def report(stats):
    print(f"received_objects {stats.received_objects}")
    print(f"indexed_objects {stats.indexed_objects}")


def main(argv):
    print(f"libgit2 {pygit2.LIBGIT2_VERSION}")
    match argv:
        case ["clone", url, dest]:
            repo = pygit2.clone_repository(url, dest)
            print("head unborn" if repo.head_is_unborn else f"head {repo.head.target}")
        case ["clone-bare", url, dest]:
            pygit2.clone_repository(url, dest, bare=True)
        case ["mirror", url, dest]:
            repo = pygit2.init_repository(dest, bare=True)
            repo.remotes.create("origin", url, "+refs/*:refs/*")
            report(repo.remotes["origin"].fetch())
        case ["fetch", dest]:
            repo = pygit2.Repository(dest)
            report(repo.remotes["origin"].fetch())
        case ["fetch-tags", dest]:
            repo = pygit2.Repository(dest)
            report(repo.remotes["origin"].fetch(["+refs/tags/*:refs/tags/*"]))
        case _:
            raise SystemExit(f"usage: see the docstring; got {argv!r}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except pygit2.GitError as error:
        raise SystemExit(f"libgit2 error: {error}")
