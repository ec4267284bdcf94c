"""The billing domain: tenants, plans, accounts, subscriptions, invoices, usage, ledger."""
