"""Monitor builders: a registry of classes with one interface (`base.Hypervisor`)."""
