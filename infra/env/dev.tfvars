# prefix comes from the package step (prefix.auto.tfvars.json = RESOURCE_PREFIX); set it here only for the chalice deploy path.
stage                  = "dev"
ses_sender             = "billing@dev.example.com"
db_min_acu             = 0.5
db_max_acu             = 2
db_deletion_protection = false
waf_block              = false
interface_endpoints    = []
log_retention_days     = 30
# chalice deploy path only, once `chalice deploy` has made the function; never on the Terraform path
# (its package sets "packaged" in prefix.auto.tfvars.json, which this file would override):
# pre_token_generation_trigger = "deployed"
