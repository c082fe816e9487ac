{{ config(materialized='incremental', unique_key='order_id') }}
select
    o.order_id,
    o.customer_id,
    o.order_date,
    o.amount,
    count(p.payment_id) as payments,
    coalesce(sum(p.amount), 0) as paid
from {{ ref('stg_orders') }} o
left join {{ ref('stg_payments') }} p on p.order_id = o.order_id
{% if is_incremental() %}
where o.order_id > (select max(order_id) from {{ this }})
{% endif %}
group by o.order_id, o.customer_id, o.order_date, o.amount
