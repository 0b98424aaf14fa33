"""A unikernel's network: the container's interface redirected to a tap the monitor opens, as urunc's
dynamic mode does. `base` holds the plain records the plan uses; `netlink` every change to a network
namespace (over `rtnl`, ukrun's own rtnetlink client; imported only by creates and deletes of networked
containers)."""
