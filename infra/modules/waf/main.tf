# WAF v2 on the API stage: AWS managed rule groups (IP reputation, common, known
# bad inputs, SQL injection) and per-IP rate limits that agree with the API's
# throttle route by route; each in count or block mode per stage. Logs go to
# CloudWatch with the Authorization header redacted.
#
# No rule here limits the body size. WAF sees only the first 16 KB of a body on
# API Gateway (64 KB at most, for a fee), so it cannot enforce the app's 256 KB:
# a size rule over 256 KB with oversize_handling MATCH matched every body over
# 16 KB and, in block mode, refused legitimate usage batches. The app answers
# bodies over MAX_BODY_BYTES (256 KB) with its own 413 (chalicelib/validation.py).
# Rules that inspect the body must use oversize_handling CONTINUE or NO_MATCH,
# never MATCH: a body is not suspect for being longer than WAF reads.

variable "name" { type = string }
variable "stage_arn" { type = string }
variable "block" {
  description = "Block (true) or only count (false) matching requests"
  type        = bool
}
variable "api_throttle" {
  description = "The API stage's throttle per method path \"RESOURCE_PATH/METHOD\" (\"*/*\" is the stage default), as given to aws_api_gateway_method_settings"
  type        = map(object({ rate = number, burst = number }))
  validation {
    condition     = contains(keys(var.api_throttle), "*/*")
    error_message = "api_throttle needs the stage default \"*/*\": WAF's limit for every other route is made from it."
  }
  validation {
    condition = alltrue([
      for path in keys(var.api_throttle) :
      path == "*/*" || can(regex("^[^*/][^*]*/(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)$", path))
    ])
    error_message = "Each api_throttle key is \"*/*\" or a method path RESOURCE_PATH/METHOD without the leading slash, e.g. v1/events/POST."
  }
  validation {
    condition     = alltrue([for t in values(var.api_throttle) : t.rate > 0])
    error_message = "Every api_throttle rate must be positive."
  }
}
variable "stage_name" {
  description = "The API stage: on the default execute-api endpoint a request's path starts with /STAGE_NAME"
  type        = string
}

locals {
  managed = {
    AWSManagedRulesAmazonIpReputationList = 1
    AWSManagedRulesCommonRuleSet          = 2
    AWSManagedRulesKnownBadInputsRuleSet  = 3
    AWSManagedRulesSQLiRuleSet            = 4
  }

  # WAF counts a rate-based rule's requests over this window.
  window_s = 300

  # Each route with a throttle of its own: its HTTP method and its path as WAF sees it.
  # The path is matched with an anchored regular expression rather than ENDS_WITH:
  # - requests arrive as /STAGE/RESOURCE_PATH on the default endpoint and as
  #   /RESOURCE_PATH through a custom domain mapped at its root; "^(/STAGE)?/PATH$"
  #   takes exactly those two forms, where ENDS_WITH "/PATH" takes any prefix too;
  # - a path parameter {name} is one segment ([^/]+) and a greedy {name+} the rest
  #   (.+); ENDS_WITH cannot say either, and "/rebill" would also end other paths.
  # No text transformation: API Gateway's paths are case-sensitive, and a request
  # spelled otherwise (encoded, other case) falls to the default rule, which is the
  # stricter limit, never a looser one.
  stage_regex = replace(var.stage_name, "/([.^$|?*+()\\[\\]{}\\\\])/", "\\$1")
  specific    = { for path, throttle in var.api_throttle : path => throttle if path != "*/*" }
  routes = {
    for path, throttle in local.specific : path => {
      method = regex("[^/]+$", path)
      regex = format("^(/%s)?/%s$", local.stage_regex, join("/", [
        for segment in slice(split("/", path), 0, length(split("/", path)) - 1) :
        can(regex("^\\{.+\\+\\}$", segment)) ? ".+" : can(regex("^\\{.+\\}$", segment)) ? "[^/]+" :
        replace(segment, "/([.^$|?*+()\\[\\]{}\\\\])/", "\\$1")
      ]))
      # The route's whole API capacity over WAF's window: one client alone can never be
      # blocked here before API Gateway's throttle would have answered it 429.
      limit = ceil(throttle.rate * local.window_s)
      name  = "per-ip-rate-${trim(replace(path, "/[^A-Za-z0-9_-]+/", "-"), "-")}"
    }
  }
  route_keys    = sort(keys(local.routes))
  default_limit = ceil(var.api_throttle["*/*"].rate * local.window_s)
  # Requests of a route with its own limit get this label (rule "throttled-routes"): the
  # default rule counts everything else. (Scope-downs nest two logical statements at most:
  # NOT(OR(AND(method, path), ...)) does not fit in the default rule itself.)
  route_label = "route:own-throttle"
}

resource "aws_wafv2_web_acl" "api" {
  #checkov:skip=CKV_AWS_192:AWSManagedRulesKnownBadInputsRuleSet (with Log4JRCE) is in the ACL; checkov cannot read the per-stage count/none override
  name  = var.name
  scope = "REGIONAL"
  default_action {
    allow {}
  }
  dynamic "rule" {
    for_each = local.managed
    content {
      name     = rule.key
      priority = rule.value
      override_action {
        dynamic "none" {
          for_each = var.block ? [1] : []
          content {}
        }
        dynamic "count" {
          for_each = var.block ? [] : [1]
          content {}
        }
      }
      statement {
        managed_rule_group_statement {
          vendor_name = "AWS"
          name        = rule.key
          # SizeRestrictions_BODY matches every body over 8 KB; usage batches are
          # legitimately larger (the app refuses over 256 KB itself: see the top).
          dynamic "rule_action_override" {
            for_each = rule.key == "AWSManagedRulesCommonRuleSet" ? ["SizeRestrictions_BODY"] : []
            content {
              name = rule_action_override.value
              action_to_use {
                count {}
              }
            }
          }
        }
      }
      visibility_config {
        cloudwatch_metrics_enabled = true
        metric_name                = rule.key
        sampled_requests_enabled   = true
      }
    }
  }
  # Labels the requests of every route with a throttle of its own; only counts.
  dynamic "rule" {
    for_each = length(local.route_keys) > 0 ? [1] : []
    content {
      name     = "throttled-routes"
      priority = 10
      action {
        count {}
      }
      rule_label {
        name = local.route_label
      }
      statement {
        # OR wants two statements or more: one route is its AND alone.
        dynamic "or_statement" {
          for_each = length(local.route_keys) > 1 ? [1] : []
          content {
            dynamic "statement" {
              for_each = local.route_keys
              content {
                and_statement {
                  statement {
                    byte_match_statement {
                      search_string         = local.routes[statement.value].method
                      positional_constraint = "EXACTLY"
                      field_to_match {
                        method {}
                      }
                      text_transformation {
                        priority = 0
                        type     = "NONE"
                      }
                    }
                  }
                  statement {
                    regex_match_statement {
                      regex_string = local.routes[statement.value].regex
                      field_to_match {
                        uri_path {}
                      }
                      text_transformation {
                        priority = 0
                        type     = "NONE"
                      }
                    }
                  }
                }
              }
            }
          }
        }
        dynamic "and_statement" {
          for_each = length(local.route_keys) == 1 ? local.route_keys : []
          content {
            statement {
              byte_match_statement {
                search_string         = local.routes[and_statement.value].method
                positional_constraint = "EXACTLY"
                field_to_match {
                  method {}
                }
                text_transformation {
                  priority = 0
                  type     = "NONE"
                }
              }
            }
            statement {
              regex_match_statement {
                regex_string = local.routes[and_statement.value].regex
                field_to_match {
                  uri_path {}
                }
                text_transformation {
                  priority = 0
                  type     = "NONE"
                }
              }
            }
          }
        }
      }
      visibility_config {
        cloudwatch_metrics_enabled = true
        metric_name                = "throttled-routes"
        sampled_requests_enabled   = false
      }
    }
  }
  # Every route without a throttle of its own: the stage default's capacity per client.
  rule {
    name     = "per-ip-rate-default"
    priority = 11
    action {
      dynamic "block" {
        for_each = var.block ? [1] : []
        content {}
      }
      dynamic "count" {
        for_each = var.block ? [] : [1]
        content {}
      }
    }
    statement {
      rate_based_statement {
        limit                 = local.default_limit
        evaluation_window_sec = local.window_s
        aggregate_key_type    = "IP"
        dynamic "scope_down_statement" {
          for_each = length(local.route_keys) > 0 ? [1] : []
          content {
            not_statement {
              statement {
                label_match_statement {
                  scope = "LABEL"
                  key   = local.route_label
                }
              }
            }
          }
        }
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "per-ip-rate-default"
      sampled_requests_enabled   = true
    }
  }
  # One per route with a throttle of its own: that method on that path.
  dynamic "rule" {
    for_each = local.route_keys
    content {
      name     = local.routes[rule.value].name
      priority = 20 + rule.key
      action {
        dynamic "block" {
          for_each = var.block ? [1] : []
          content {}
        }
        dynamic "count" {
          for_each = var.block ? [] : [1]
          content {}
        }
      }
      statement {
        rate_based_statement {
          limit                 = local.routes[rule.value].limit
          evaluation_window_sec = local.window_s
          aggregate_key_type    = "IP"
          scope_down_statement {
            and_statement {
              statement {
                byte_match_statement {
                  search_string         = local.routes[rule.value].method
                  positional_constraint = "EXACTLY"
                  field_to_match {
                    method {}
                  }
                  text_transformation {
                    priority = 0
                    type     = "NONE"
                  }
                }
              }
              statement {
                regex_match_statement {
                  regex_string = local.routes[rule.value].regex
                  field_to_match {
                    uri_path {}
                  }
                  text_transformation {
                    priority = 0
                    type     = "NONE"
                  }
                }
              }
            }
          }
        }
      }
      visibility_config {
        cloudwatch_metrics_enabled = true
        metric_name                = local.routes[rule.value].name
        sampled_requests_enabled   = true
      }
    }
  }
  visibility_config {
    cloudwatch_metrics_enabled = true
    metric_name                = var.name
    sampled_requests_enabled   = true
  }
}

resource "aws_wafv2_web_acl_association" "api" {
  resource_arn = var.stage_arn
  web_acl_arn  = aws_wafv2_web_acl.api.arn
}

resource "aws_cloudwatch_log_group" "waf" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest with AWS-managed keys; a CMK for logs is future work
  # WAF requires the aws-waf-logs- prefix.
  name              = "aws-waf-logs-${var.name}"
  retention_in_days = 365
}

resource "aws_wafv2_web_acl_logging_configuration" "api" {
  resource_arn            = aws_wafv2_web_acl.api.arn
  log_destination_configs = [aws_cloudwatch_log_group.waf.arn]
  redacted_fields {
    single_header {
      name = "authorization"
    }
  }
}

output "web_acl_arn" { value = aws_wafv2_web_acl.api.arn }
