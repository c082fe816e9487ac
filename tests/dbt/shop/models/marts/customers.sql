{{ config(materialized='table') }}
select
    c.customer_id,
    c.customer_name,
    c.country,
    coalesce(o.order_count, 0) as order_count,
    coalesce(o.completed_amount, 0) as lifetime_value,
    o.first_order_date,
    coalesce(o.order_count, 0) >= {{ var('min_orders') }} as is_active
from {{ ref('stg_customers') }} c
left join {{ ref('customer_orders') }} o using (customer_id)
