# Sourced by the run and test commands: nothing local ever reaches real AWS or
# the instance-metadata endpoint. Real credentials in the caller's shell are
# deliberately replaced.
export AWS_EC2_METADATA_DISABLED=true
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_SESSION_TOKEN=testing
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
export AWS_REGION=$AWS_DEFAULT_REGION
unset AWS_PROFILE
